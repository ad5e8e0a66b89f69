r"""Evaluation: embedding a split once, every retrieval metric, and a trained run's test numbers.

Change how a metric is computed here and nowhere else. Contents: the official protocol's recalls
(:func:`retrieval_metrics`), the hierarchy-aware metrics with their chance levels and ceilings
(:func:`hierarchy_metrics`), embedding of a split (:func:`embed_split`, :func:`evaluate_split`), and
evaluation of a run folder (:func:`evaluate_run`, :func:`hierarchy_check`, :func:`top_k_clouds`).

Hierarchy-aware metrics (relevance from the benchmark's caption targets, :mod:`h2arn.data.relevance`): a caption such as
"a vessel." is true of every vessel, so instance recall alone cannot tell a model that ranks all
vessels first from one that does not. Per direction:

* ``hmAP``: mean average precision with binary relevance "the cloud satisfies the caption at the
  caption's level" (3D->text: the captions the cloud satisfies);
* ``nDCG@10``: linear gains = the graded relevance (the leading levels of the caption's path a cloud matches, +1
  when it satisfies the caption: partial credit for sharing part of the taxonomy);
* per caption level ``L<l>_*``: instance R@K with its **ceiling** (a perfect model that ranks the R
  clouds satisfying the caption first, in any order, finds the caption's own cloud in the top K with
  probability ``min(1, K / R)``), hmAP, and the mean number of relevant clouds;
* ``chance_*``: the expectation of every metric under a uniformly random ranking (exact formulas), and
  ``ceiling_*``: the best value any model can reach on this gallery.

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
import math
from pathlib import Path
from typing import Sequence


import torch
from torch import Tensor
from tqdm.auto import tqdm

from .device import autocast, resolve_device
from .features import FeatureSplit, atomic_write_json, data_fingerprint, load_feature_splits, trim_padding
from .runs import load_run_split, load_trained, test_links_of

__all__ = ["RECALL_KS", "ranks_text_to_cloud", "ranks_cloud_to_text", "retrieval_metrics", "average_precision",
           "ndcg_at_k", "chance_average_precision", "chance_recall", "ceiling_recall", "hierarchy_metrics",
           "has_caption_targets", "relevance_tensors",
           "evaluate_similarity",
           "encode_all", "similarity_in_blocks", "embed_split", "evaluate_split", "evaluate_run",
           "hierarchy_check", "top_k_clouds", "engagement"]

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


# --------------------------------------------------------------------------- hierarchy-aware metrics

NDCG_K = 10


def average_precision(scores: Tensor, relevant: Tensor) -> Tensor:
    """AP of each row: ``(Q, N)`` scores (higher = first) and bool relevance -> ``(Q,)`` in [0, 1].

    ``AP = (1/R) * sum over relevant items of precision at their rank``; rows without a relevant item get NaN.
    Ties are broken by column order (stable sort), which only matters for exactly equal scores.
    """
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    rel = relevant.gather(1, order).double()
    ranks = torch.arange(1, scores.shape[1] + 1, dtype=torch.float64)
    precision = rel.cumsum(dim=1) / ranks
    n_rel = rel.sum(dim=1)
    return ((precision * rel).sum(dim=1) / n_rel).where(n_rel > 0, torch.tensor(float("nan"), dtype=torch.float64))


def _discounts(k: int) -> Tensor:
    return 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64))


def ndcg_at_k(scores: Tensor, gains: Tensor, k: int = NDCG_K) -> Tensor:
    """nDCG@k of each row with linear gains: ``(Q, N)`` scores and gains ``>= 0`` -> ``(Q,)`` (NaN if no gain)."""
    k = min(k, scores.shape[1])
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    disc = _discounts(k)
    dcg = (gains.double().gather(1, order) * disc).sum(dim=1)
    ideal = (gains.double().sort(dim=1, descending=True).values[:, :k] * disc).sum(dim=1)
    return (dcg / ideal).where(ideal > 0, torch.tensor(float("nan"), dtype=torch.float64))


def chance_average_precision(n_relevant: Tensor, n_items: int) -> Tensor:
    """Expected AP under a uniformly random ranking of ``n_items`` with ``n_relevant`` relevant ones (exact).

    ``E[AP] = (1/N) * (H_N + (R - 1)/(N - 1) * (N - H_N))`` (H_N the harmonic number): the item at rank k is
    relevant with probability R/N and then has ``1 + (R-1)(k-1)/(N-1)`` relevant items at or above it.
    """
    r = torch.as_tensor(n_relevant, dtype=torch.float64)
    n = float(n_items)
    h = float(torch.sum(1.0 / torch.arange(1, n_items + 1, dtype=torch.float64)))
    frac = (r - 1) / (n - 1) if n > 1 else torch.zeros_like(r)
    return (h + frac * (n - h)) / n


def _hit_probability(n_items: Tensor, n_good: Tensor, k: int) -> Tensor:
    """P(at least one of ``n_good`` items is in the top ``k`` of a random order of ``n_items``)."""
    n = torch.as_tensor(n_items, dtype=torch.float64)
    g = torch.as_tensor(n_good, dtype=torch.float64)
    # 1 - C(n - g, k) / C(n, k) = 1 - prod_{i<k} (n - g - i) / (n - i)
    miss = torch.ones_like(n * g)
    for i in range(k):
        miss = miss * ((n - g - i).clamp_min(0) / (n - i).clamp_min(1))
    return 1.0 - miss


def chance_recall(n_items: int, n_targets: Tensor, k: int) -> Tensor:
    """Per query, the probability that a random ranking of ``n_items`` puts one of its targets in the top k."""
    return _hit_probability(torch.full_like(torch.as_tensor(n_targets, dtype=torch.float64), n_items), n_targets, k)


def ceiling_recall(n_relevant: Tensor, n_targets: Tensor, k: int) -> Tensor:
    """Per query, the best instance R@k a model can guarantee when ``n_relevant`` items satisfy the query
    equally and ``n_targets`` of them count as hits: the targets are a random subset of the relevant ones."""
    return _hit_probability(n_relevant, n_targets, k)


def _pct(x: Tensor) -> float:
    x = x[~torch.isnan(x)]
    return float(100.0 * x.mean()) if x.numel() else float("nan")


def hierarchy_metrics(sim: Tensor, txt_to_pc: Tensor, meta: Sequence[dict], per_query: bool = False) -> dict:
    """Hierarchy-aware metrics, per-level recalls with ceilings, chance levels (module docstring), in %.

    sim ``(N_txt, N_pc)``; txt_to_pc ``(N_txt,)``; meta: one dict per caption with ``level`` and the taxonomy
    fields (:mod:`h2arn.data.relevance`, benchmark v4). With ``per_query=True`` the result also holds ``per_query``: per-caption
    AP/nDCG/rank/level and per-cloud AP, for a bootstrap over queries (:mod:`h2arn.stats`).
    """
    sim, txt_to_pc = _check(sim.detach().float().cpu(), txt_to_pc)
    n_txt, n_pc = sim.shape
    rel, grades = relevance_tensors(meta, txt_to_pc, n_pc)
    has_caption = torch.zeros(n_pc, dtype=torch.bool)
    has_caption[txt_to_pc] = True
    out: dict = {}
    ap_t = average_precision(sim, rel)
    nd_t = ndcg_at_k(sim, grades)
    ap_p = average_precision(sim.t()[has_caption], rel.t()[has_caption])
    nd_p = ndcg_at_k(sim.t()[has_caption], grades.t()[has_caption])
    out.update({"t2p_hmAP": _pct(ap_t), "p2t_hmAP": _pct(ap_p), f"t2p_nDCG@{NDCG_K}": _pct(nd_t),
                f"p2t_nDCG@{NDCG_K}": _pct(nd_p)})
    # chance levels (uniformly random ranking) and ceilings (best any model can do)
    n_rel_t = rel.sum(dim=1)
    n_rel_p = rel.t()[has_caption].sum(dim=1)
    ones = torch.ones(n_txt, dtype=torch.float64)
    kk = min(NDCG_K, n_pc)
    chance_nd_t = (grades.double().mean(dim=1) * _discounts(kk).sum()) / \
        (grades.double().sort(dim=1, descending=True).values[:, :kk] * _discounts(kk)).sum(dim=1)
    kp = min(NDCG_K, n_txt)
    gp = grades.t()[has_caption].double()
    chance_nd_p = (gp.mean(dim=1) * _discounts(kp).sum()) / \
        (gp.sort(dim=1, descending=True).values[:, :kp] * _discounts(kp)).sum(dim=1)
    out.update({"chance_t2p_hmAP": _pct(chance_average_precision(n_rel_t, n_pc)),
                "chance_p2t_hmAP": _pct(chance_average_precision(n_rel_p, n_txt)),
                f"chance_t2p_nDCG@{NDCG_K}": _pct(chance_nd_t), f"chance_p2t_nDCG@{NDCG_K}": _pct(chance_nd_p)})
    out.update({f"chance_{k}": v for k, v in chance_recalls(txt_to_pc, n_pc).items()})   # instance recalls, Rsum
    for k in RECALL_KS:
        out[f"ceiling_t2p_R@{k}"] = _pct(ceiling_recall(n_rel_t, ones, k))
        # 3D->text: a model that ranks a cloud's most specific caption first always finds one of the cloud's own
        # captions (identical captions of other shapes tie with it, and the official rank counts only strictly
        # better ones), so the ceiling is 100 % -- not the binary-relevance bound of text->3D, which models exceed
        out[f"ceiling_p2t_R@{k}"] = 100.0
    out["ceiling_rsum"] = sum(out[f"ceiling_{d}_R@{k}"] for d in ("t2p", "p2t") for k in RECALL_KS)
    out["relevant_per_caption"] = float(n_rel_t.double().mean())
    # per caption level
    levels = torch.tensor([int(m["level"]) for m in meta])
    ranks = ranks_text_to_cloud(sim, txt_to_pc)
    out["levels"] = sorted(set(levels.tolist()))
    for lv in out["levels"]:
        sel = levels == lv
        pre = f"L{lv}_"
        out[pre + "n"] = int(sel.sum())
        out[pre + "relevant_mean"] = float(n_rel_t[sel].double().mean())
        out[pre + "t2p_hmAP"] = _pct(ap_t[sel])
        out[pre + f"t2p_nDCG@{NDCG_K}"] = _pct(nd_t[sel])
        out[pre + "chance_t2p_hmAP"] = _pct(chance_average_precision(n_rel_t[sel], n_pc))
        for k in RECALL_KS:
            out[pre + f"t2p_R@{k}"] = _pct((ranks[sel] <= k).double())
            out[pre + f"ceiling_t2p_R@{k}"] = _pct(ceiling_recall(n_rel_t[sel], ones[sel], k))
    if per_query:
        out["per_query"] = {"t2p_ap": ap_t.tolist(), "t2p_ndcg": nd_t.tolist(), "t2p_rank": ranks.tolist(),
                            "level": levels.tolist(), "p2t_ap": ap_p.tolist()}
    return out


def has_caption_targets(meta: Sequence[dict] | None) -> bool:
    """True when every caption's meta says what it names (benchmark v4: ``level``, ``target``, ``taxonomy_path``)."""
    return bool(meta) and all(m.get("level") is not None and "target" in m and "taxonomy_path" in m for m in meta)


def relevance_tensors(meta: Sequence[dict], txt_to_pc: Tensor, num_clouds: int) -> tuple[Tensor, Tensor]:
    """``(relevant bool, grades float)``, both ``(N_txt, N_pc)``, from :mod:`h2arn.data.relevance`."""
    from .data.relevance import relevance_grades, relevance_matrix

    links = torch.as_tensor(txt_to_pc).tolist()
    rel = torch.from_numpy(relevance_matrix(meta, links))
    grades = torch.from_numpy(relevance_grades(meta, links)).float()
    if rel.shape != (len(meta), num_clouds):
        raise ValueError(f"relevance covers {rel.shape[1]} clouds but the split has {num_clouds}: every cloud needs "
                         "at least one caption for hierarchy-aware metrics")
    return rel, grades


def evaluate_similarity(sim: Tensor, txt_to_pc: Tensor, meta: Sequence[dict] | None = None,
                        per_query: bool = False) -> dict:
    """Every metric of one similarity matrix: the official recalls, plus the hierarchy-aware ones when the
    captions carry their targets (benchmark v4 meta, :func:`has_caption_targets`)."""
    out: dict = {k: float(v) for k, v in retrieval_metrics(sim, txt_to_pc).items()}
    if has_caption_targets(meta):
        out.update(hierarchy_metrics(sim, txt_to_pc, meta, per_query=per_query))
    return out


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
                   amp: bool = False, hierarchy: bool = False, per_query: bool = False) -> dict:
    """Retrieval metrics on the full similarity matrix (texts x clouds) of one split.

    ``hierarchy=True`` adds the hierarchy-aware metrics (:func:`hierarchy_metrics`) when the split's meta
    has caption levels; training leaves it off (validation picks the epoch on Rsum, cheaply).
    """
    t, p = embed_split(model, split, device, batch_size, amp)
    sim = model.similarity(t, p).float().cpu()
    return evaluate_similarity(sim, split.txt_to_pc.cpu(), split.meta if hierarchy else None, per_query=per_query)


# --------------------------------------------------------------------------- a trained run

METRICS_VERSION = 3   # bump when a metric changes: cached <split>_metrics.json files are recomputed


def evaluate_run(run_dir: str | Path, split: str = "test", device: str = "auto", per_query: bool = False) -> dict:
    """Every metric of a run's best (val-selected) model on ``split``; cached in ``<run>/<split>_metrics.json``.

    ``per_query=True`` keeps per-query scores (``per_query``) for bootstraps over queries.
    """
    run_dir = Path(run_dir)
    model_path = run_dir / "best_model.pth"
    cache = run_dir / f"{split}_metrics.json"
    stamp = model_path.stat().st_mtime_ns if model_path.is_file() else None
    links = test_links_of(run_dir, split)
    fingerprint = data_fingerprint(links)
    if cache.is_file():
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if (cached.get("model_mtime_ns") == stamp and cached.get("fingerprint") == fingerprint
                and cached.get("metrics_version") == METRICS_VERSION and (not per_query or "per_query" in cached)):
            return cached
    dev = resolve_device(device)
    model, payload = load_trained(run_dir, str(dev))
    data = load_feature_splits(links)
    m = evaluate_split(model, data, dev, hierarchy=True, per_query=True)
    m.update({"metrics_version": METRICS_VERSION, "gallery_clouds": data.num_clouds, "split": split, "best_epoch": payload.get("epoch"), "model_mtime_ns": stamp, "fingerprint": fingerprint,
              "val_rsum": payload.get("val_metrics", {}).get("rsum")})
    atomic_write_json(m, cache)
    if not per_query:
        m = {k: v for k, v in m.items() if k != "per_query"}
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


# --------------------------------------------------------------------------- is the geometry engaged?

def _token_redundancy_of(links: Sequence[Path], pc_model: str = "PointNet") -> Tensor | None:
    """Per-token redundancy shares ``(N_pc, T)`` of the clouds behind ``links`` (link order), or None if absent."""
    parts = []
    for link in map(Path, links):
        subset, split = link.stem.split("_link_")
        path = link.parent / subset / split / f"pc_redundancy_{pc_model}.pt"
        if not path.is_file():
            return None
        parts.append(torch.load(path, map_location="cpu", weights_only=True).float())
    return torch.cat(parts) if parts else None


@torch.no_grad()
def engagement(run_dir: str | Path, split: str = "test", device: str = "auto", batch_size: int = 256) -> dict:
    """Is the hyperbolic machinery doing anything in this trained run? (replication audit, section 2)

    * ``cone_inside``: share of (caption, its cloud) pairs whose cloud lies inside the caption's entailment cone
      (exterior angle <= half-aperture, with the run's K or relative aperture); NaN for Euclidean runs;
    * ``radius_text``/``radius_cloud`` and ``radius_text_by_level``: mean distance to the origin (hyperbolic);
    * ``eff_tokens_text``/``eff_tokens_cloud``: effective number of pooled tokens ``exp(entropy)`` of the
      aggregation weights, with ``valid_tokens_*`` (uniform pooling uses them all);
    * ``redundant_weight_mass`` vs ``redundant_uniform_mass``: pooling weight on cloud tokens with more than half of
      their points flagged redundant, against what uniform pooling puts there (present with benchmark v4 features).
    """
    from . import lorentz as L
    from .aggregation import effective_tokens

    dev = resolve_device(device)
    model, payload = load_trained(run_dir, str(dev))
    links = test_links_of(run_dir, split)
    data = load_feature_splits(links)
    out: dict = {"split": split, "hyperbolic": bool(model.hyperbolic)}
    for name, tok, msk in (("text", data.txt, data.txt_mask), ("cloud", data.pc, data.pc_mask)):
        eff, valid, weights = [], [], []
        for s in range(0, tok.shape[0], batch_size):
            t, m = tok[s:s + batch_size].to(dev), msk[s:s + batch_size].to(dev)
            w = model.contributions(t, m, name).float().cpu()
            eff.append(effective_tokens(w))
            valid.append(m.sum(dim=1).float().cpu())
            weights.append(w)
        out[f"eff_tokens_{name}"] = float(torch.cat(eff).mean())
        out[f"valid_tokens_{name}"] = float(torch.cat(valid).mean())
        if name == "cloud":
            shares = _token_redundancy_of(links)
            if shares is not None and shares.shape[0] == data.num_clouds:
                w = torch.cat([_pad_columns(x, shares.shape[1]) for x in weights])
                red = (torch.nan_to_num(shares, nan=0.0) > 0.5) & data.pc_mask.bool()[:, :shares.shape[1]]
                uniform = data.pc_mask.float()[:, :shares.shape[1]]
                uniform = uniform / uniform.sum(dim=1, keepdim=True).clamp_min(1)
                out["redundant_weight_mass"] = float((w * red).sum(dim=1).mean())
                out["redundant_uniform_mass"] = float((uniform * red).sum(dim=1).mean())
                out["redundant_token_share"] = float(red.float().sum() / data.pc_mask[:, :shares.shape[1]].sum())
    t_emb, p_emb = embed_split(model, data, dev, batch_size)
    if model.hyperbolic:
        c = model.curvature()
        loss_cfg = payload.get("loss_config") or {}
        own = p_emb[data.txt_to_pc.to(p_emb.device)]
        aperture = loss_cfg.get("cone_aperture")
        if aperture:
            from .losses import relative_K
            K = relative_K(t_emb, c, aperture)
        else:
            K = float(loss_cfg.get("K", 0.1))
        inside = L.exterior_angle(t_emb, own, c) <= L.half_aperture(t_emb, c, K)
        out["cone_inside"] = float(inside.float().mean())
        rt, rp = L.dist0(t_emb, c).cpu(), L.dist0(p_emb, c).cpu()
        out["radius_text"], out["radius_cloud"] = float(rt.mean()), float(rp.mean())
        levels = [m.get("level") for m in data.meta]
        if levels and all(lv is not None for lv in levels):
            lv = torch.tensor(levels)
            out["radius_text_by_level"] = {str(int(k)): float(rt[lv == k].mean()) for k in sorted(set(levels))}
    else:
        out["cone_inside"] = float("nan")
    return out


def _pad_columns(w: Tensor, width: int) -> Tensor:
    """Pad or cut ``(B, L)`` weights to ``width`` columns (token files and trimmed batches may differ in L)."""
    if w.shape[1] >= width:
        return w[:, :width]
    return torch.nn.functional.pad(w, (0, width - w.shape[1]))


# --------------------------------------------------------------------------- chance levels, hubness

def chance_recalls(txt_to_pc: Tensor, num_clouds: int) -> dict[str, float]:
    """Instance R@1/5/10 (both directions, in %) and Rsum of a uniformly random ranking of one split.

    Text->3D: each caption has one target among ``num_clouds``; 3D->text: a cloud is found when any of
    its own captions is in the top K of all captions. Clouds without captions are left out, as in
    :func:`retrieval_metrics`. The same formulas as :func:`hierarchy_metrics`'s ``chance_*`` keys, for a
    split without caption levels (e.g. the validation curve of a training run).
    """
    txt_to_pc = torch.as_tensor(txt_to_pc).long()
    n_txt = int(txt_to_pc.numel())
    own = torch.bincount(txt_to_pc, minlength=num_clouds)
    own = own[own > 0]
    out: dict[str, float] = {}
    for k in RECALL_KS:
        out[f"t2p_R@{k}"] = _pct(chance_recall(num_clouds, torch.ones(n_txt, dtype=torch.float64), k))
        out[f"p2t_R@{k}"] = _pct(chance_recall(n_txt, own, k))
    out["rsum"] = sum(out[f"{d}_R@{k}"] for d in ("t2p", "p2t") for k in RECALL_KS)
    return out


def hubness(sim: Tensor, k: int = 10, top_fraction: float = 0.05) -> dict[str, float]:
    """How unevenly the items (columns) of ``sim (N_queries, N_items)`` fill the queries' top-``k`` lists.

    ``N_k(j)`` (the k-occurrence) counts the queries whose top ``k`` (highest scores) contain item ``j``;
    without hubs every item would appear about ``k * N_queries / N_items`` times. Returns:

    * ``top_share``: share of all ``k * N_queries`` top-k slots taken by the ``ceil(top_fraction * N_items)``
      items of largest ``N_k`` (``uniform_top_share`` = what perfectly even lists would give);
    * ``skewness``: the (population) skewness of ``N_k`` over items (0 = symmetric; the hubness literature,
      Radovanovic et al. 2010, calls ``> 1`` strong hubness);
    * ``max_occurrence`` and its share of the queries, and ``never_share``: items in no top-k list (anti-hubs).

    Why it matters: a hub is returned for many unrelated queries, so a gallery of top-k lists shows the same
    items again and recall is earned partly by the hubs' own targets.
    """
    sim = torch.as_tensor(sim).detach().double().cpu()
    n_q, n_items = sim.shape
    k = max(1, min(int(k), n_items))
    top = sim.topk(k, dim=1).indices
    occ = torch.bincount(top.reshape(-1), minlength=n_items).double()
    n_top = max(1, math.ceil(top_fraction * n_items))
    centred = occ - occ.mean()
    std = centred.pow(2).mean().sqrt()
    skew = float(centred.pow(3).mean() / std ** 3) if float(std) > 0 else 0.0
    return {"k": k, "n_queries": n_q, "n_items": n_items, "n_top_items": n_top,
            "top_share": float(occ.sort(descending=True).values[:n_top].sum() / (k * n_q)),
            "uniform_top_share": n_top / n_items, "skewness": skew,
            "max_occurrence": int(occ.max()), "max_occurrence_share": float(occ.max() / n_q),
            "never_share": float((occ == 0).double().mean())}
