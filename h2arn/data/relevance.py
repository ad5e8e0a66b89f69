"""Which shapes does a caption truly describe? Relevance from the benchmark's caption targets.

Why: a generic caption ("a seat.") is true of every chair, stool and bench; scoring only its own shape as
correct makes the retrieval ceiling far below 100 % and punishes a model for ranking another seat first.
Benchmark v4 stores, for every caption, a **target** (``caption_targets`` in ``metadata.json``, ``target``
in the feature meta): the taxonomy path prefix it names (``node``) and the attribute values it states
(``named``); instance captions (level 5) name their ``shape``. Identical captions share a ``caption_group``.

* :func:`satisfies`: does a shape (its ``taxonomy_path`` and ``attributes``) satisfy a target?
* :func:`relevance_matrix`: ``(n_captions, n_clouds)`` bool for a split: satisfies the target, or has a
  caption with the identical text (same group), or is the caption's own cloud;
* :func:`relevance_grades`: graded relevance for nDCG, the number of the caption's path levels a cloud
  matches (plus one when it satisfies the whole target), 0 for clouds of another subset.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np


def satisfies(shape: Dict, target: Dict, shape_name: Optional[str] = None) -> bool:
    """``shape`` = ``{"taxonomy_path": [...], "attributes": {...}}`` (a shape's or a caption's meta)."""
    if "shape" in target:  # an instance caption
        return shape_name is not None and shape_name == target["shape"]
    path = list(shape.get("taxonomy_path") or [])
    node = list(target["node"])
    if path[:len(node)] != node:
        return False
    attrs = shape.get("attributes") or {}
    return all(attrs.get(k) == v for k, v in (target.get("named") or {}).items())


def _clouds(meta: Sequence[Dict], txt_to_pc: Sequence[int]) -> List[Dict]:
    n_pc = int(max(txt_to_pc)) + 1 if len(txt_to_pc) else 0
    clouds: List[Optional[Dict]] = [None] * n_pc
    for m, j in zip(meta, txt_to_pc):
        clouds[int(j)] = clouds[int(j)] or m
    missing = [j for j, c in enumerate(clouds) if c is None]
    if missing:
        raise ValueError(f"clouds {missing[:5]} have no caption, so their taxonomy is unknown")
    return clouds  # type: ignore[return-value]


def _check(meta: Sequence[Dict]) -> None:
    if not meta or any("target" not in m or "taxonomy_path" not in m for m in meta):
        raise ValueError("the caption meta has no 'target'/'taxonomy_path' (not benchmark v4 features). Fix: "
                         "regenerate the data (ensure_synthetic) and re-extract the features.")


def relevance_matrix(meta: Sequence[Dict], txt_to_pc: Sequence[int]) -> np.ndarray:
    """``(n_captions, n_clouds)`` bool relevance for one split's per-caption meta (feature order)."""
    _check(meta)
    txt_to_pc = [int(j) for j in txt_to_pc]
    clouds = _clouds(meta, txt_to_pc)
    rel = np.zeros((len(meta), len(clouds)), dtype=bool)
    for i, m in enumerate(meta):
        for j, c in enumerate(clouds):
            rel[i, j] = satisfies(c, m["target"], c.get("shape"))
        rel[i, txt_to_pc[i]] = True
    groups: Dict[int, set] = {}
    for m, j in zip(meta, txt_to_pc):
        if m.get("caption_group") is not None:
            groups.setdefault(int(m["caption_group"]), set()).add(j)
    for i, m in enumerate(meta):
        if m.get("caption_group") is not None:
            rel[i, sorted(groups[int(m["caption_group"])])] = True
    return rel


def relevance_grades(meta: Sequence[Dict], txt_to_pc: Sequence[int]) -> np.ndarray:
    """``(n_captions, n_clouds)`` int grades: matched leading levels of the caption's path, +1 if relevant."""
    _check(meta)
    clouds = _clouds(meta, txt_to_pc)
    rel = relevance_matrix(meta, txt_to_pc)
    grades = np.zeros(rel.shape, dtype=np.int64)
    for i, m in enumerate(meta):
        node = list(m["target"]["node"])
        for j, c in enumerate(clouds):
            if c.get("subset") != m.get("subset"):
                continue
            path = list(c.get("taxonomy_path") or [])
            k = 0
            while k < min(len(node), len(path)) and path[k] == node[k]:
                k += 1
            grades[i, j] = k
    return grades + rel.astype(np.int64)
