r"""Which shapes a caption is TRUE of: graded relevance from the benchmark's taxonomy.

Instance recall treats every caption as an instance query: "a vessel." has exactly one right cloud
although every vessel of the gallery satisfies it. The hierarchy-aware metrics of :mod:`h2arn.evaluate`
use instead the relevance defined here, computed from the per-caption meta the feature extraction
writes (``<subset>_meta_<split>.json``).

A caption's **requirement**: benchmark v4 writes it into the meta as ``target`` = ``{"node": path prefix the
caption names, "named": attribute values it states, "shape": the instance (instance captions only)}``, and
identical texts share a ``caption_group`` id. Older meta (v3) gives only ``level`` (0 = most generic) and the
shape's taxonomy path (root -> leaf synset, :func:`taxonomy_path`) of length ``P``, from which:

* ``level < P``: the cloud's path must start with the caption shape's path up to depth ``level`` (level 0:
  same top category ... level ``P - 1``: same leaf category);
* ``level == P``: same leaf category and every attribute the caption names (:func:`named_attributes`);
* ``level > P``: the instance itself.

A cloud **satisfies** a caption (binary relevance, used by mAP and the ceilings) when it meets the requirement,
or when one of its own captions is the same text (identical captions of different shapes are recognised:
"a chair." describes every chair that got that caption). The caption's own cloud always satisfies it.

**Grades** (for nDCG): a relevant cloud gets ``G = level + 1``; a non-relevant one gets the length of the
taxonomy prefix it shares with the caption's shape, capped at ``G - 1`` (a chair for an "armchair with
arms" query is partly right, a table is not). So a level-0 query has binary grades.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["normalise_caption", "taxonomy_path", "named_attributes", "Requirement", "caption_requirement",
           "cloud_descriptions", "relevance", "relevant_counts"]

_WORD = re.compile(r"[a-z0-9]+")


def normalise_caption(text: str) -> str:
    """Lower case, punctuation dropped, single spaces: ``"A chair."`` == ``"a chair"``."""
    return " ".join(_WORD.findall(str(text).lower()))


def taxonomy_path(meta: dict) -> tuple[str, ...]:
    """Root -> leaf synsets of the caption's shape: ``meta["taxonomy_path"]`` if present, else
    ``(super_category, category)`` (benchmark v3), without missing entries."""
    path = meta.get("taxonomy_path")
    if path:
        return tuple(str(p) for p in path)
    return tuple(str(p) for p in (meta.get("super_category"), meta.get("category")) if p)


def _words(text: str) -> set[str]:
    words = set(_WORD.findall(str(text).lower()))
    return words | {w[:-1] for w in words if w.endswith("s")}     # "cabinets" names "cabinet"


def _value(v) -> str:
    return json.dumps(v, sort_keys=True)


def named_attributes(meta: dict) -> frozenset:
    """The (key, value) attributes the caption names: ``meta["named_attributes"]`` if the benchmark
    records them, else every string attribute whose value appears as a word of the caption, and every
    object of a room's ``objects`` that the caption mentions (``("object", name)``)."""
    target = meta.get("target")
    if isinstance(target, dict) and isinstance(target.get("named"), dict):
        return frozenset((str(k), _value(v)) for k, v in target["named"].items())
    words = _words(meta.get("caption", ""))
    out = set()
    for k, v in (meta.get("attributes") or {}).items():
        if isinstance(v, str) and v and set(_WORD.findall(v.lower())) <= words:
            out.add((str(k), _value(v)))
        elif k == "objects" and isinstance(v, dict):
            out.update(("object", str(name)) for name in v if set(_WORD.findall(str(name).lower())) <= words)
    return frozenset(out)


def _cloud_attributes(meta: dict) -> frozenset:
    out = set()
    for k, v in (meta.get("attributes") or {}).items():
        out.add((str(k), _value(v)))
        if k == "objects" and isinstance(v, dict):
            out.update(("object", str(name)) for name, n in v.items() if n)
    return frozenset(out)


@dataclass(frozen=True)
class Requirement:
    """What a cloud must have to satisfy a caption (see the module docstring)."""

    path: tuple[str, ...]
    attributes: frozenset = frozenset()
    instance: str | None = None
    grade: int = 1            # grade of a relevant cloud (= level + 1)


def caption_requirement(meta: dict) -> Requirement:
    """The :class:`Requirement` of one caption's meta (needs ``level``; ``shape`` for instance captions)."""
    level = meta.get("level")
    if level is None:
        raise ValueError("caption meta has no 'level': hierarchy-aware metrics need the benchmark's caption "
                         "levels. Fix: re-extract the features with h2arn.extract (it writes <subset>_meta_<split>.json)")
    level = int(level)
    path = taxonomy_path(meta)
    target = meta.get("target")
    if isinstance(target, dict) and "node" in target:       # benchmark v4: what the caption names, explicitly
        if target.get("shape") is not None:
            return Requirement(path, instance=str(target["shape"]), grade=level + 1)
        return Requirement(tuple(str(p) for p in target["node"]), named_attributes(meta), grade=level + 1)
    if level < len(path):
        return Requirement(path[:level + 1], grade=level + 1)
    if level == len(path):
        return Requirement(path, named_attributes(meta), grade=level + 1)
    return Requirement(path, instance=str(meta.get("shape")), grade=level + 1)


@dataclass(frozen=True)
class CloudDescription:
    path: tuple[str, ...]
    attributes: frozenset
    shape: str
    captions: frozenset        # normalised texts (and caption-group ids) of the cloud's own captions


def cloud_descriptions(meta: Sequence[dict], txt_to_pc: Tensor, num_clouds: int) -> list[CloudDescription]:
    """One description per cloud from the meta of its captions (clouds without a caption get an empty one)."""
    first: dict[int, dict] = {}
    texts: dict[int, set] = {}
    for t, p in enumerate(torch.as_tensor(txt_to_pc).tolist()):
        first.setdefault(p, meta[t])
        texts.setdefault(p, set()).add(_text_key(meta[t]))
    out = []
    for p in range(num_clouds):
        m = first.get(p, {})
        out.append(CloudDescription(taxonomy_path(m), _cloud_attributes(m), str(m.get("shape", f"cloud {p}")),
                                    frozenset(texts.get(p, ()))))
    return out


def _text_key(meta: dict):
    """Identical captions: the benchmark's ``caption_group`` id when present, else the normalised text."""
    group = meta.get("caption_group")
    return ("group", int(group)) if group is not None else normalise_caption(meta.get("caption", ""))


def _satisfies(req: Requirement, cloud: CloudDescription) -> bool:
    if req.instance is not None:
        return cloud.shape == req.instance
    return cloud.path[:len(req.path)] == req.path and req.attributes <= cloud.attributes


def _shared_prefix(a: tuple, b: tuple) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def relevance(meta: Sequence[dict], txt_to_pc: Tensor, num_clouds: int) -> tuple[Tensor, Tensor]:
    """``(relevant, grades)``, both ``(N_txt, N_pc)``: bool relevance and float grades (module docstring).

    meta: one dict per caption (``caption, level, shape`` and the taxonomy fields). The caption's own cloud is
    always relevant; so is any cloud that has a caption with the same normalised text.
    """
    txt_to_pc = torch.as_tensor(txt_to_pc, dtype=torch.long)
    if len(meta) != txt_to_pc.numel():
        raise ValueError(f"{len(meta)} meta entries for {txt_to_pc.numel()} captions: the meta file does not "
                         "match the link file. Fix: re-extract the features (h2arn.extract)")
    clouds = cloud_descriptions(meta, txt_to_pc, num_clouds)
    n_txt = len(meta)
    relevant = torch.zeros(n_txt, num_clouds, dtype=torch.bool)
    grades = torch.zeros(n_txt, num_clouds)
    cache: dict[tuple, tuple[Tensor, Tensor]] = {}
    owners_of_text: dict[str, list[int]] = {}
    for p, c in enumerate(clouds):
        for text in c.captions:
            owners_of_text.setdefault(text, []).append(p)
    for t, m in enumerate(meta):
        req = caption_requirement(m)
        key = (req, taxonomy_path(m))
        if key not in cache:
            rel = torch.tensor([_satisfies(req, c) for c in clouds], dtype=torch.bool)
            partial = torch.tensor([min(_shared_prefix(key[1], c.path), req.grade - 1) for c in clouds],
                                   dtype=torch.float32)
            cache[key] = (rel, torch.where(rel, torch.full_like(partial, float(req.grade)), partial))
        rel, grade = cache[key]
        relevant[t] = rel
        grades[t] = grade
        same_text = owners_of_text.get(_text_key(m), [])
        own = [int(txt_to_pc[t])] + same_text
        relevant[t, own] = True
        grades[t, own] = float(req.grade)
    return relevant, grades


def relevant_counts(relevant: Tensor) -> Tensor:
    """Relevant clouds per caption ``(N_txt,)``: how many shapes a perfect model cannot tell apart."""
    return relevant.sum(dim=1)
