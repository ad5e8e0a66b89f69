r"""The course's in-memory search session: a trained run's test split as a gallery, with its captions.

Why a module of its own: chapter 08's pictures (the Poincaré disk, the contribution maps) need the test
captions and their embeddings beside the clouds, which a :class:`~h2arn.search.retriever.Retriever` over
your own shapes does not have. :func:`session_from_run` gathers them from a run folder; :func:`search`
ranks the session's clouds for a free-text query by Lorentz distance at the model's curvature.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from h2arn import lorentz as L


@dataclass
class SearchResult:
    """One retrieved cloud: ``rank`` (1-based), gallery ``index``, shape ``name``, Lorentz ``distance``."""

    rank: int
    index: int
    name: str
    distance: float
    category: str | None = None


@dataclass
class RetrievalSession:
    """What the interactive chapter needs, in memory.

    model: a trained :class:`h2arn.model.H2ARN` (eval mode). encode_captions: ``list[str] -> (tokens
    (N, L_t, D_t), mask (N, L_t))``, the text encoder that produced the caption features.
    cloud_tokens ``(N_pc, L_p, D_p)`` / cloud_mask ``(N_pc, L_p)``: the gallery's point features;
    cloud_emb ``(N_pc, E)``: their embeddings; cloud_names / cloud_points (each ``(N_i, >=6)`` xyz rgb)
    / cloud_categories: one per cloud. text_emb ``(N_txt, E)``, captions, caption_levels (or None),
    txt_to_pc ``(N_txt,)``: the test captions, for the disk. num_tokens_per_cloud / points_per_cloud:
    how extraction tokenised each cloud (for :func:`token_assignment`). cloud_redundant: per cloud, a
    bool ``(N_i,)`` marking the generator's redundant points (duplicates, supports, clutter) or None.
    tokenize: optional
    ``str -> list[str]`` naming the word pieces of a query (for :func:`draw_text_contributions`).
    """

    model: Any
    encode_captions: Callable[[Sequence[str]], tuple[Tensor, Tensor]]
    cloud_tokens: Tensor
    cloud_mask: Tensor
    cloud_emb: Tensor
    cloud_names: list[str]
    cloud_points: list[np.ndarray]
    text_emb: Tensor
    captions: list[str]
    txt_to_pc: Tensor
    cloud_categories: list[str | None] = field(default_factory=list)
    caption_levels: list[int | None] | None = None
    points_per_cloud: int | None = None
    cloud_redundant: list[np.ndarray | None] | None = None
    tokenize: Callable[[str], list[str]] | None = None
    device: torch.device = torch.device("cpu")
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        n = self.cloud_emb.shape[0]
        for what, seq in (("cloud_names", self.cloud_names), ("cloud_points", self.cloud_points),
                          ("cloud_tokens", self.cloud_tokens)):
            if len(seq) != n:
                raise ValueError(f"session: {what} has {len(seq)} entries but there are {n} cloud embeddings")
        if not self.cloud_categories:
            self.cloud_categories = [None] * n
        if self.text_emb.shape[0] != len(self.captions) or self.txt_to_pc.shape[0] != len(self.captions):
            raise ValueError("session: text_emb, captions and txt_to_pc must have one entry per caption")

    @property
    def curvature(self) -> float:
        """The model's curvature ``c`` (hyperbolic models only)."""
        return float(self.model.curvature().detach())

    def search(self, query: str, k: int = 5) -> list[SearchResult]:
        return search(self, query, k)


def session_from_run(run_dir: str | os.PathLike, split: str = "test", device: str = "auto") -> RetrievalSession:
    """A run's ``split`` gallery (its clouds, captions and their embeddings) as a :class:`RetrievalSession`.

    The caption features and the query use the same text encoder (the run's ``txt_model``); the clouds
    are read from the generated dataset the features were extracted from (matched by the ``shape`` in the
    meta file); ``points_per_cloud`` is the point count extraction kept (recorded in the model file).
    """
    from h2arn.data import available_subsets, ensure_synthetic, load_metadata, load_split
    from h2arn.device import resolve_device
    from h2arn.encoders.text import load_text_encoder
    from h2arn.evaluate import embed_split
    from h2arn.runs import load_run_split, load_trained, read_metrics

    dev = resolve_device(device)
    run_dir = Path(run_dir)
    model, payload = load_trained(run_dir, str(dev))
    if not model.hyperbolic:
        raise ValueError(f"{run_dir}: the interactive chapter needs a hyperbolic model (this run is Euclidean). "
                         "Fix: use a run of the h2arn variant.")
    config = read_metrics(run_dir)["config"]
    data = load_run_split(run_dir, split)
    text_emb, cloud_emb = embed_split(model, data, dev)
    owners = data.pc_to_txt()
    names = [data.meta[o[0]].get("shape") if o else None for o in owners]
    if any(n is None for n in names):
        raise ValueError(f"{data.sources}: the meta file has no 'shape' for every cloud; the gallery cannot be "
                         "matched to point files. Fix: re-run feature extraction (it writes *_meta_<split>.json).")
    root = ensure_synthetic(config.get("profile", "ci"))
    records = {}
    for subset in available_subsets(root):
        records.update({r.name: r for r in load_split(root, subset, split)})
    missing = [n for n in names if n not in records]
    if missing:
        raise ValueError(f"{root}: shapes {missing[:3]} of the {split} features have no point file there. Fix: "
                         "regenerate the dataset and the features of this profile (they must come from the same seed).")
    encoder = load_text_encoder(str(config.get("txt_model", "MiniLM")), device=dev, progress=False)
    recs = [records[n] for n in names]
    columns = list(load_metadata(root).get("columns", []))
    flag_col = columns.index("redundant_flag") - 6 if "redundant_flag" in columns else None
    redundant = [(r.extra[:, flag_col] > 0) if flag_col is not None and r.extra is not None
                 and r.extra.shape[1] > flag_col else None for r in recs]
    features = payload.get("features") or {}
    return RetrievalSession(
        model=model, encode_captions=lambda caps: encoder.encode(list(caps), progress=False), cloud_tokens=data.pc,
        cloud_mask=data.pc_mask, cloud_emb=cloud_emb.cpu(), cloud_names=list(names),
        cloud_points=[r.points for r in recs], cloud_categories=[r.meta.get("category") for r in recs],
        text_emb=text_emb.cpu(), captions=[m.get("caption", "") for m in data.meta], txt_to_pc=data.txt_to_pc.cpu(),
        caption_levels=[m.get("level") for m in data.meta], tokenize=lambda text: word_pieces(encoder, text),
        device=dev, cloud_redundant=redundant, points_per_cloud=features.get("num_points"))


# --------------------------------------------------------------------------- search

@torch.no_grad()
def encode_query(session: RetrievalSession, query: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(embedding (E,), tokens (1, L_t, D_t), mask (1, L_t))`` of one query string."""
    if not isinstance(query, str) or not query.strip():
        raise ValueError("the query is empty: type a description, e.g. 'a tall blue vase with two handles'")
    tokens, mask = session.encode_captions([query])
    emb = session.model.encode_text(tokens.to(session.device), mask.to(session.device))[0].float().cpu()
    return emb, tokens, mask


@torch.no_grad()
def search(session: RetrievalSession, query: str, k: int = 5) -> list[SearchResult]:
    """Top-``k`` gallery clouds for a free-text query, nearest first (Lorentz distance at the model's c)."""
    emb, _, _ = encode_query(session, query)
    session._cache["last_query"] = (query, emb)
    d = L.pairwise_dist(emb[None].double(), session.cloud_emb.double(), session.curvature)[0]
    k = max(1, min(int(k), d.numel()))
    top = torch.topk(-d, k).indices.tolist()
    return [SearchResult(rank=i + 1, index=j, name=session.cloud_names[j], distance=float(d[j]),
                         category=session.cloud_categories[j]) for i, j in enumerate(top)]


def word_pieces(text_encoder, text: str) -> list[str]:
    """The tokenizer's pieces of ``text`` (with its special tokens), aligned with the feature positions."""
    ids = text_encoder.tokenizer(text, truncation=True, max_length=text_encoder.max_length)["input_ids"]
    return text_encoder.tokenizer.convert_ids_to_tokens(ids)

