r"""H2ARN's training objective: multi-positive contrastive loss + entailment-cone ordering loss.

``L = L_cont + cone_weight * L_ord`` (paper Eqs. 6-12; official ``LorentzLoss``):

* ``L_cont``: symmetric InfoNCE with *several positives per row*. A batch holds (caption, cloud)
  links; captions of the same shape share a cloud, so ``pos[i, j] = pc_idx[i] == pc_idx[j]`` and
  every duplicate of the right cloud counts as a positive (not as a false negative, as RMARN's
  diagonal-only targets would). Logits are ``-d_L / tau`` (the paper) or ``<h_t, h_p>_L / tau``
  (``logits="inner"``, the official code).
* ``L_ord``: the text embedding is the apex of an entailment cone ("text entails 3D": a caption is
  more generic than the shape it describes) and the matching 3D embedding should lie inside it:
  ``relu(exterior_angle(text, cloud) - half_aperture(text, K))``, averaged over positive pairs only
  (MERU's formulas, :func:`h2arn.lorentz.half_aperture`, :func:`h2arn.lorentz.exterior_angle`).

Every term is returned by name for logging, together with the fraction of active cone hinges and
the learnable scalars. For the Euclidean baseline the cone loss is undefined: it is set to 0 and the
logs say so (``entailment_defined = 0``).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from h2arn import lorentz as L
from h2arn.model import H2ARN, LossConfig, float32_geometry

__all__ = ["positive_mask", "multi_positive_contrastive", "entailment_cone_loss", "contrastive_logits", "relative_K",
           "H2ARNLoss"]


def positive_mask(pc_idx: Tensor) -> Tensor:
    """``pos[i, j] = pc_idx[i] == pc_idx[j]``: ``(B,)`` long -> ``(B, B)`` bool (diagonal always True)."""
    if pc_idx.dim() != 1:
        raise ValueError(f"pc_idx must be 1-D (B,), got shape {tuple(pc_idx.shape)}")
    return pc_idx.unsqueeze(1) == pc_idx.unsqueeze(0)


def _multi_positive_ce(logits: Tensor, pos_mask: Tensor, reduction: str = "logsumexp") -> Tensor:
    """Mean over rows of ``-log(sum_pos e^l / sum_all e^l)`` (``"logsumexp"``: the positives summed inside
    the log), or of ``mean_pos(-log(e^l / sum_all e^l))`` (``"mean"``: averaged over the positives, SupCon's
    L_out; with many positives per row, e.g. hierarchy-aware ones, the sum inside the log is satisfied by
    the single easiest positive)."""
    all_lse = torch.logsumexp(logits, dim=1)
    if reduction == "mean":
        pos = pos_mask.to(logits.dtype)
        pos_mean = (logits.masked_fill(~pos_mask, 0.0) * pos).sum(dim=1) / pos.sum(dim=1).clamp_min(1)
        return (all_lse - pos_mean).mean()
    pos_lse = torch.logsumexp(logits.masked_fill(~pos_mask, float("-inf")), dim=1)
    return (all_lse - pos_lse).mean()


def multi_positive_contrastive(logits: Tensor, pos_mask: Tensor, return_terms: bool = False,
                               reduction: str = "logsumexp") -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """Symmetric multi-positive InfoNCE (paper Eq. 7 both ways): a scalar tensor.

    logits ``(B, B)`` (rows = texts, columns = clouds), pos_mask ``(B, B)`` bool with at least one
    positive per row and per column. text->3D averages over rows, 3D->text over columns, the loss is
    their mean. With ``return_terms=True`` returns ``(loss, text_to_3d, 3d_to_text)``.
    """
    if logits.shape != pos_mask.shape or logits.dim() != 2:
        raise ValueError(f"logits {tuple(logits.shape)} and pos_mask {tuple(pos_mask.shape)} must be the same (B, B)")
    pos_mask = pos_mask.to(torch.bool)
    if not (bool(pos_mask.any(dim=1).all()) and bool(pos_mask.any(dim=0).all())):
        raise ValueError("every row and column of pos_mask needs at least one positive "
                         "(with pc_idx-based masks the diagonal always is one)")
    t2p = _multi_positive_ce(logits, pos_mask, reduction)
    p2t = _multi_positive_ce(logits.t(), pos_mask.t(), reduction)
    loss = 0.5 * (t2p + p2t)
    return (loss, t2p, p2t) if return_terms else loss


def relative_K(text_emb: Tensor, c: Tensor | float, aperture: float) -> Tensor:
    """The cone constant ``K`` that gives a text at the batch's mean radius the half-aperture ``aperture``.

    ``half_aperture = asin(2K / (sqrt(c) ||x_s||))``, so ``K = sin(aperture) sqrt(c) mean||x_s|| / 2`` (detached).
    With the fixed K = 0.1 and texts at ||x_s|| ~ 0.5 the cone is 0.33 rad wide while positive clouds sit at
    ~1.3 rad: the hinge is never satisfied (replication audit) and acts as a constant radial pull.
    """
    c = torch.as_tensor(c, dtype=text_emb.dtype, device=text_emb.device)
    radius = text_emb[..., 1:].norm(dim=-1).mean()
    return (math.sin(aperture) * c.sqrt() * radius / 2.0).detach()


def _entailment_terms(text_emb: Tensor, cloud_emb: Tensor, pos_mask: Tensor, c: Tensor | float,
                      K: float | Tensor) -> tuple[Tensor, Tensor]:
    """(loss, active fraction) as tensors (no device sync); see :func:`entailment_cone_loss`."""
    rows, cols = pos_mask.nonzero(as_tuple=True)
    if rows.numel() == 0:
        zero = text_emb.sum() * 0.0
        return zero, zero.detach()
    t = text_emb[rows]
    p = cloud_emb[cols]
    theta = L.exterior_angle(t, p, c)
    phi = L.half_aperture(t, c, K)
    hinge = torch.relu(theta - phi)
    return hinge.mean(), (hinge.detach() > 0).to(hinge.dtype).mean()


def entailment_cone_loss(text_emb: Tensor, cloud_emb: Tensor, pos_mask: Tensor, c: Tensor | float,
                         K: float = 0.1) -> tuple[Tensor, float]:
    """Hierarchical-ordering loss with the TEXT as apex: each matched cloud must lie in the text's cone.

    text_emb ``(B, D+1)``, cloud_emb ``(B', D+1)`` on the hyperboloid, pos_mask ``(B, B')`` bool.
    Returns ``(loss, active_fraction)``: loss = mean over positive pairs of
    ``relu(exterior_angle(t_i, p_j) - half_aperture(t_i, K))``; active_fraction = share of positive
    pairs whose hinge is > 0 (how many clouds are still outside their caption's cone).
    Only positive pairs are evaluated (gathered, not masked), so non-matching pairs cannot inject
    NaN gradients through ``0 * NaN``.
    """
    loss, active = _entailment_terms(text_emb, cloud_emb, pos_mask, c, K)
    return loss, float(active)


def contrastive_logits(model: H2ARN, t_emb: Tensor, p_emb: Tensor, tau: float, kind: str = "distance") -> Tensor:
    """``(B, B)`` logits: ``-d_L/tau`` (paper), ``<.,.>_L/tau`` (official code) or cosine/tau (Euclidean)."""
    if not model.hyperbolic:
        return model.similarity(t_emb, p_emb) / tau
    if kind == "distance":
        return -L.pairwise_dist(t_emb, p_emb, model.curvature()) / tau
    if kind == "inner":
        return L.pairwise_inner(t_emb, p_emb) / tau
    raise ValueError(f"unknown logits kind {kind!r}; choose 'distance' or 'inner'")


class H2ARNLoss(nn.Module):
    """``contrastive + cone_weight * entailment`` with every term logged (see module docstring)."""

    def __init__(self, config: LossConfig | None = None):
        super().__init__()
        self.config = config if config is not None else LossConfig()

    def forward(self, model: H2ARN, t_emb: Tensor, p_emb: Tensor, pc_idx: Tensor, pos_mask: Tensor | None = None
                ) -> tuple[Tensor, dict[str, float]]:
        """t_emb ``(B, E)``, p_emb ``(B, E)`` (row k = the cloud of link k), pc_idx ``(B,)`` long cloud ids.

        ``pos_mask`` ``(B, B)`` bool overrides the positives (default: same cloud id); the training loop
        passes the hierarchy-aware positives there (every cloud that satisfies the caption).

        Returns ``(total_loss, logs)``; logs keys: ``loss, contrastive, contrastive_t2p,
        contrastive_p2t, entailment, entailment_weighted, entail_active_frac, entailment_defined,
        tau, cone_weight`` plus :meth:`H2ARN.scalars` (``curvature, curvature_at_bound, alpha_*, temp_*``).
        """
        cfg = self.config
        if t_emb.shape[0] != p_emb.shape[0] or pc_idx.shape != (t_emb.shape[0],):
            raise ValueError(f"t_emb {tuple(t_emb.shape)}, p_emb {tuple(p_emb.shape)} and pc_idx "
                             f"{tuple(pc_idx.shape)} must share the batch size B")
        with float32_geometry(t_emb.device):
            t, p = t_emb.float(), p_emb.float()
            pos = positive_mask(pc_idx.to(t.device)) if pos_mask is None else (pos_mask.to(t.device).bool()
                                                                                 | positive_mask(pc_idx.to(t.device)))
            logits = contrastive_logits(model, t, p, cfg.tau, cfg.logits)
            cont, t2p, p2t = multi_positive_contrastive(logits, pos, return_terms=True,
                                                        reduction=cfg.positive_reduction)
            if model.hyperbolic:
                K = cfg.K if cfg.cone_aperture is None else relative_K(t, model.curvature(), cfg.cone_aperture)
                if cfg.cone_weight > 0:
                    ent, active = _entailment_terms(t, p, pos, model.curvature(), K)
                else:  # ablation: still measured and logged (MERU practice), but no graph kept
                    with torch.no_grad():
                        ent, active = _entailment_terms(t, p, pos, model.curvature(), K)
                defined = 1.0
            else:
                ent, active, defined = t.new_zeros(()), t.new_zeros(()), 0.0
            total = cont + cfg.cone_weight * ent if cfg.cone_weight > 0 else cont
        names = ("loss", "contrastive", "contrastive_t2p", "contrastive_p2t", "entailment", "entail_active_frac")
        values = torch.stack([x.detach().float() for x in (total, cont, t2p, p2t, ent, active)]).tolist()
        logs = dict(zip(names, values))                       # one device sync for all terms
        logs.update({"entailment_weighted": cfg.cone_weight * logs["entailment"], "entailment_defined": defined,
                     "tau": cfg.tau, "cone_weight": cfg.cone_weight})
        logs.update(model.scalars())
        return total, logs
