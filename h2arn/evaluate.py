r"""Evaluation: embedding a split once, every retrieval metric, and a trained run's test numbers.

Change how a metric is computed here and nowhere else. Contents: the official protocol's recalls
(:func:`retrieval_metrics`), embedding of a split (:func:`embed_split`, :func:`evaluate_split`), and
evaluation of a run folder (:func:`evaluate_run`, :func:`hierarchy_check`, :func:`top_k_clouds`).

Protocol (official ``recall.py``, see the reference dossier §4.1), on the full similarity matrix
``S`` of shape ``(N_txt, N_pc)`` (rows = captions, columns = clouds):

* text->3D: the rank of caption ``t``'s cloud ``p`` is ``1 + #{p' : S[t, p'] > S[t, p]}``;
  ties count in favour of the target (strict ``>``).
* 3D->text: a cloud has several captions; its rank is the BEST rank over all of its captions,
  ``1 + #{t' : S[t', p] > max_{t of p} S[t, p]}``. So 3D->text R@K means "any of its captions is
  in the top K". Clouds with no caption in the split are left out of the 3D->text averages.
* Reported: R@1/5/10 in %, ``rsum`` = sum of the six recalls, mean rank, MRR.

:func:`similarity_in_blocks` encodes every caption and every cloud ONCE, then computes the matrix;
the official code re-runs both encoders for every 50 x 50 block (O(N_txt * N_pc / 50) encoder
passes instead of O(N_txt + N_pc)).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from .device import autocast, resolve_device
from .features import FeatureSplit, atomic_write_json, data_fingerprint, load_feature_splits, trim_padding
from .runs import load_run_split, load_trained, test_links_of

__all__ = ["RECALL_KS", "ranks_text_to_cloud", "ranks_cloud_to_text", "retrieval_metrics", "average_precision",
           "chance_average_precision",
           "encode_all", "similarity_in_blocks", "embed_split", "evaluate_split", "evaluate_run",
           "hierarchy_check", "top_k_clouds"]

RECALL_KS = (1, 5, 10)


def _check(sim: Tensor, txt_to_pc: Tensor) -> tuple[Tensor, Tensor]:
    if sim.dim() != 2:
        raise ValueError(f"sim must be (N_txt, N_pc), got shape {tuple(sim.shape)}")
    txt_to_pc = torch.as_tensor(txt_to_pc, dtype=torch.long, device=sim.device)
    if txt_to_pc.shape != (sim.shape[0],):
        raise ValueError(f"txt_to_pc has shape {tuple(txt_to_pc.shape)}; expected ({sim.shape[0]},), "
                         "one cloud index per caption (row of sim)")
    if txt_to_pc.numel() and (int(txt_to_pc.min()) < 0 or int(txt_to_pc.max()) >= sim.shape[1]):
        raise ValueError(f"txt_to_pc holds indices outside [0, {sim.shape[1]}) (the number of clouds)")
    if not bool(torch.isfinite(sim).all()):
        raise ValueError("sim contains NaN/inf: the model produced non-finite scores; check the checkpoint "
                         "and the feature files (h2arn.features validates them)")
    return sim, txt_to_pc


def ranks_text_to_cloud(sim: Tensor, txt_to_pc: Tensor) -> Tensor:
    """1-based rank of each caption's cloud in its row, ties in favour of the target: ``(N_txt,)`` long."""
    sim, txt_to_pc = _check(sim, txt_to_pc)
    target = sim.gather(1, txt_to_pc.unsqueeze(1))                  # (N_txt, 1)
    return 1 + (sim > target).sum(dim=1)


def ranks_cloud_to_text(sim: Tensor, txt_to_pc: Tensor) -> tuple[Tensor, Tensor]:
    """Best rank over each cloud's captions, ties in favour of the target.

    Returns ``(ranks, has_caption)``: ranks ``(N_pc,)`` long (meaningless where ``has_caption`` is
    False), has_caption ``(N_pc,)`` bool.
    """
    sim, txt_to_pc = _check(sim, txt_to_pc)
    n_pc = sim.shape[1]
    own = torch.full_like(sim, float("-inf"))
    cols = torch.arange(n_pc, device=sim.device)
    own_mask = txt_to_pc.unsqueeze(1) == cols.unsqueeze(0)          # (N_txt, N_pc): caption t describes cloud p
    own = torch.where(own_mask, sim, own)
    best = own.max(dim=0).values                                      # best own-caption score per cloud
    has_caption = own_mask.any(dim=0)
    ranks = 1 + (sim > best.unsqueeze(0)).sum(dim=0)
    return ranks, has_caption


def _summary(ranks: Tensor, prefix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    r = ranks.double()
    for k in RECALL_KS:
        out[f"{prefix}_R@{k}"] = float(100.0 * (r <= k).double().mean()) if r.numel() else float("nan")
    out[f"{prefix}_mean_rank"] = float(r.mean()) if r.numel() else float("nan")
    out[f"{prefix}_mrr"] = float((1.0 / r).mean()) if r.numel() else float("nan")
    return out


def retrieval_metrics(sim: Tensor, txt_to_pc: Tensor) -> dict[str, float]:
    """All retrieval metrics from a full similarity matrix.

    sim ``(N_txt, N_pc)`` (higher = closer), txt_to_pc ``(N_txt,)`` long. Keys: ``t2p_R@1, t2p_R@5,
    t2p_R@10, p2t_R@1, p2t_R@5, p2t_R@10`` (in %), ``rsum`` (sum of the six), ``t2p_mean_rank,
    p2t_mean_rank, t2p_mrr, p2t_mrr``, and ``n_txt, n_pc`` (clouds with at least one caption).
    """
    sim = sim.detach()
    t2p = ranks_text_to_cloud(sim, txt_to_pc)
    p2t, has_caption = ranks_cloud_to_text(sim, txt_to_pc)
    out = {**_summary(t2p, "t2p"), **_summary(p2t[has_caption], "p2t")}
    out["rsum"] = sum(out[f"{d}_R@{k}"] for d in ("t2p", "p2t") for k in RECALL_KS)
    out["n_txt"] = int(sim.shape[0])
    out["n_pc"] = int(has_caption.sum())
    return out


def average_precision(scores: Tensor, relevant: Tensor) -> Tensor:
    """Per-query average precision ``(Q,)`` of a ranking: scores ``(Q, N)`` (higher first), relevant ``(Q, N)`` bool.

    AP = mean over the relevant items of the precision at their rank (ties broken by index, stable sort).
    Queries without a relevant item get NaN. Used for class-level search (several right shapes per query).
    """
    order = torch.argsort(scores.double(), dim=1, descending=True, stable=True)
    rel = relevant.bool().gather(1, order).double()
    hits = rel.cumsum(1)
    ranks = torch.arange(1, rel.shape[1] + 1, dtype=torch.float64)
    n_rel = rel.sum(1)
    ap = (rel * hits / ranks).sum(1) / n_rel.clamp_min(1)
    return torch.where(n_rel > 0, ap, torch.full_like(ap, float("nan")))


def chance_average_precision(n_relevant: int, n_total: int) -> float:
    """Expected AP of a uniformly random ranking with ``n_relevant`` of ``n_total`` items relevant (exact).

    ``E[AP] = (1/N) sum_n (1 + (n-1)(R-1)/(N-1)) / n``: item at rank n is relevant with probability R/N, and
    then the other n-1 items above it hold (n-1)(R-1)/(N-1) relevant ones on average.
    """
    R, N = int(n_relevant), int(n_total)
    if not 0 < R <= N:
        raise ValueError(f"need 0 < n_relevant <= n_total, got {R}, {N}")
    if N == 1:
        return 1.0
    n = np.arange(1, N + 1, dtype=np.float64)
    return float(np.mean((1 + (n - 1) * (R - 1) / (N - 1)) / n))


@torch.no_grad()
def encode_all(model, tokens: Tensor, mask: Tensor | None, modality: str, batch_size: int = 256,
               device: torch.device | str | None = None, desc: str | None = None) -> Tensor:
    """Encode ``(N, L, D)`` tokens in batches with ``model.encode_text``/``encode_cloud``: ``(N, E)`` on ``device``."""
    if device is None:
        device = next(model.parameters()).device
    encode = model.encode_text if modality == "text" else model.encode_cloud
    outs = []
    for start in tqdm(range(0, tokens.shape[0], batch_size), desc=desc or f"encode {modality}", disable=None,
                      leave=False):
        tok = tokens[start:start + batch_size].to(device, non_blocking=True)
        m = None if mask is None else mask[start:start + batch_size].to(device, non_blocking=True)
        outs.append(encode(tok, m))
    return torch.cat(outs, dim=0)


@torch.no_grad()
def similarity_in_blocks(model, txt: Tensor, txt_mask: Tensor | None, pc: Tensor, pc_mask: Tensor | None,
                         batch_size: int = 256, device: torch.device | str | None = None) -> Tensor:
    """Full ``(N_txt, N_pc)`` similarity matrix on the CPU, each modality encoded once (eval mode).

    The model is put in eval mode (dropout off) and restored to its previous mode afterwards.
    Similarities are computed in row blocks of ``batch_size`` texts so memory stays bounded.
    """
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        t_emb = encode_all(model, txt, txt_mask, "text", batch_size, device)
        p_emb = encode_all(model, pc, pc_mask, "cloud", batch_size, device)
        blocks = [model.similarity(t_emb[s:s + batch_size], p_emb).cpu()
                  for s in range(0, t_emb.shape[0], batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(blocks, dim=0)


# --------------------------------------------------------------------------- embedding a split

@torch.no_grad()
def embed_split(model, split: FeatureSplit, device: torch.device, batch_size: int = 512,
                amp: bool = False) -> tuple[Tensor, Tensor]:
    """Embed every caption and every cloud of a split once: ``(N_txt, E)``, ``(N_pc, E)`` (float32).

    Each sample is encoded once (the official ``recall.get_sim`` re-runs both encoders for every
    50 x 50 block of the similarity matrix).
    """
    was_training = model.training
    model.eval()
    try:
        t_parts, p_parts = [], []
        for s in range(0, split.num_texts, batch_size):
            tok, msk = trim_padding(split.txt[s:s + batch_size], split.txt_mask[s:s + batch_size])
            with autocast(device, amp):
                t = model.encode_text(tok.to(device), msk.to(device))
            t_parts.append(t.float())
        for s in range(0, split.num_clouds, batch_size):
            tok, msk = trim_padding(split.pc[s:s + batch_size], split.pc_mask[s:s + batch_size])
            with autocast(device, amp):
                p = model.encode_cloud(tok.to(device), msk.to(device))
            p_parts.append(p.float())
        return torch.cat(t_parts), torch.cat(p_parts)
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate_split(model, split: FeatureSplit, device: torch.device, batch_size: int = 512,
                   amp: bool = False) -> dict:
    """Retrieval metrics on the full similarity matrix (texts x clouds) of one split."""
    t, p = embed_split(model, split, device, batch_size, amp)
    sim = model.similarity(t, p).float().cpu()
    return {k: float(v) for k, v in retrieval_metrics(sim, split.txt_to_pc.cpu()).items()}


# --------------------------------------------------------------------------- a trained run

def evaluate_run(run_dir: str | Path, split: str = "test", device: str = "auto") -> dict:
    """Metrics of a run's best (val-selected) model on ``split``; cached in ``<run>/<split>_metrics.json``."""
    run_dir = Path(run_dir)
    model_path = run_dir / "best_model.pth"
    cache = run_dir / f"{split}_metrics.json"
    stamp = model_path.stat().st_mtime_ns if model_path.is_file() else None
    links = test_links_of(run_dir, split)
    fingerprint = data_fingerprint(links)
    if cache.is_file():
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("model_mtime_ns") == stamp and cached.get("fingerprint") == fingerprint:
            return cached
    dev = resolve_device(device)
    model, payload = load_trained(run_dir, str(dev))
    data = load_feature_splits(links)
    m = evaluate_split(model, data, dev)
    m.update({"split": split, "best_epoch": payload.get("epoch"), "model_mtime_ns": stamp, "fingerprint": fingerprint,
              "val_rsum": payload.get("val_metrics", {}).get("rsum")})
    atomic_write_json(m, cache, indent=1)
    return m


@torch.no_grad()
def hierarchy_check(run_dir: str | Path, split: str = "test", device: str = "auto") -> dict:
    """Does the distance of a caption's embedding to the origin grow with its specificity level?

    The benchmark tags each caption with ``level`` (0 = super-category, the most generic ... 3 = one
    shape). In a hierarchy-aware hyperbolic space generic captions should sit nearer the origin.
    Returns per-level mean distances, the Spearman correlation between level and distance (and its
    p-value), and the clouds' mean distance. For the Euclidean baseline the embeddings are unit
    vectors, so the check is not applicable (``applicable = False``).
    """
    from scipy.stats import spearmanr

    from . import lorentz as L

    dev = resolve_device(device)
    model, _ = load_trained(run_dir, str(dev))
    data = load_run_split(run_dir, split)
    levels = [m.get("level") for m in data.meta]
    if not model.hyperbolic:
        return {"applicable": False, "reason": "Euclidean embeddings are unit vectors (cosine similarity)"}
    if any(lv is None for lv in levels):
        return {"applicable": False, "reason": "the meta file has no 'level' for every caption"}
    t, p = embed_split(model, data, dev)
    c = model.curvature()
    dt = L.dist0(t, c).cpu()
    dp = L.dist0(p, c).cpu()
    lv = torch.tensor(levels)
    per_level = {int(k): float(dt[lv == k].mean()) for k in sorted(set(levels))}
    rho, pval = spearmanr(lv.numpy(), dt.numpy())
    return {"applicable": True, "per_level_mean_dist": per_level,
            "per_level_count": {int(k): int((lv == k).sum()) for k in sorted(set(levels))},
            "spearman_rho": float(rho), "spearman_p": float(pval), "cloud_mean_dist": float(dp.mean()),
            "text_dist": dt.tolist(), "levels": levels}


@torch.no_grad()
def top_k_clouds(run_dir: str | Path, query_indices: Sequence[int], k: int = 5, split: str = "test",
                 device: str = "auto") -> list[dict]:
    """For each query caption: its text, meta, the top-``k`` cloud indices and whether each is the match.

    Cloud ``j`` is named by the ``shape`` of any caption linked to it (all of them agree).
    """
    dev = resolve_device(device)
    model, _ = load_trained(run_dir, str(dev))
    data = load_run_split(run_dir, split)
    t, p = embed_split(model, data, dev)
    sim = model.similarity(t[list(query_indices)], p).cpu()
    owners = data.pc_to_txt()
    out = []
    for row, q in zip(sim, query_indices):
        top = row.topk(min(k, data.num_clouds)).indices.tolist()
        target = int(data.txt_to_pc[q])
        out.append({"query": q, "caption": data.meta[q].get("caption", f"caption {q}"), "meta": data.meta[q],
                    "target": target, "top": top, "correct": [j == target for j in top],
                    "top_meta": [data.meta[owners[j][0]] if owners[j] else {} for j in top],
                    "scores": [float(row[j]) for j in top]})
    return out
