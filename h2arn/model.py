r"""The H2ARN dual encoder: two token transformers, alpha scaling, Lorentz lift, contribution pooling.

Per modality (text tokens ``(B, L_t, D_t)``, point-cloud tokens ``(B, L_p, D_p)``):

1. optional input projection ``Linear(D_in, d_model)`` (only when ``D_in != d_model``, as the
   official code);
2. ``num_layers`` Pre-LN ``nn.TransformerEncoderLayer`` s (no positional encoding, as the official
   code), with ``src_key_padding_mask`` so padding tokens are never attended to;
3. scaling by a learnable ``alpha`` (stored as ``log alpha``, init ``1/sqrt(d_model)``, ``alpha <= 1``);
4. contribution-aware hyperbolic aggregation (:mod:`h2arn.aggregation`) on a Lorentz hyperboloid of
   learnable curvature ``c`` (stored as ``log c``, bounded to ``[curv_min, curv_max]``).

The result is one ``(d_model + 1)`` point per sample (time coordinate first, see
:mod:`h2arn.lorentz`), or a unit ``(d_model)`` vector for the Euclidean baseline. Retrieval compares
embeddings with :meth:`H2ARN.similarity` (``-d_L``; ranking identical to the Lorentz inner product).

Corrections to the official code (``liwrui/H2ARN`` ``model.py``), each switchable where it matters:

* padding is masked in attention, anchor mean and aggregation (the official code masks nothing;
  ``mask_padding=False`` reproduces that);
* ``lift="expmap"`` (paper Eq. 5) by default; ``lift="official"`` reproduces the code's direct lift;
* the constrained scalars (``c``, ``alpha``, aggregation ``T``) are read through accessors, never by
  mutating ``.data`` inside ``forward``: ``encode_*`` called on its own sees the same values as
  training. The clamps are straight-through (:func:`h2arn.aggregation.bounded_exp`), so the gradient
  is never silently zero at a bound; call :meth:`H2ARN.project_parameters_` after each optimiser step
  to keep the raw parameters inside their bounds;
* the aggregation temperature is positive by construction;
* geometry (scaling, lift, aggregation, similarity) always runs in float32 with autocast disabled,
  so mixed-precision training cannot push ``cosh``/``sinh`` or ``acosh`` into half precision.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Iterator

import torch
from torch import Tensor, nn

from h2arn import lorentz as L
from h2arn.attention import encoder_layer_forward
from h2arn.aggregation import GEOMETRIES, LIFTS, MODES, ContributionAggregator, bounded_exp

__all__ = ["ModelConfig", "LossConfig", "H2ARN", "ModalityEncoder", "float32_geometry"]


def _from_dict(cls, d: dict):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}; known keys: {sorted(known)}")
    return cls(**d)


SCALAR_NAMES = ("log_c", "log_alpha_txt", "log_alpha_pcd", "log_temp")   # the learnable scalars

@dataclass
class ModelConfig:
    """Architecture hyper-parameters. Defaults = the paper's best setting (6 layers, 64 heads, 512-d)."""

    d_txt: int = 512
    d_pcd: int = 512
    d_model: int = 512
    nhead: int = 64
    num_layers: int = 6
    dim_feedforward: int | None = None   # None -> 4 * d_model (official)
    dropout: float = 0.1
    geometry: str = "hyperbolic"         # "euclidean": Eu baseline, cosine similarity
    aggregation: str = "contribution"    # "mean": lifted masked mean (w/o aggregation ablation, Eu+MP)
    #   with geometry="euclidean", "contribution" weights tokens by softmax(-||z_i - mean||/T) and
    #   L2-normalises the weighted sum (our Euclidean analogue; the paper's Eu+MP baseline is "mean")
    lift: str = "expmap"                 # paper Eq. 5; "official" = the code's direct lift
    learn_curvature: bool = True
    curv_init: float = 1.0
    curv_min: float = 0.1
    curv_max: float = 10.0
    agg_temp_init: float = 0.07
    agg_temp_relative: bool = False      # True: T in units of each sample's mean token-anchor distance
    mask_padding: bool = True            # False = official code: padding tokens attend and are pooled

    def __post_init__(self) -> None:
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"geometry={self.geometry!r}; choose one of {GEOMETRIES}")
        if self.aggregation not in MODES:
            raise ValueError(f"aggregation={self.aggregation!r}; choose one of {MODES}")
        if self.lift not in LIFTS:
            raise ValueError(f"lift={self.lift!r}; choose one of {LIFTS}")
        if self.d_model % self.nhead != 0:
            raise ValueError(f"d_model={self.d_model} must be divisible by nhead={self.nhead}")
        if not 0 < self.curv_min <= self.curv_init <= self.curv_max:
            raise ValueError(f"need 0 < curv_min <= curv_init <= curv_max, got "
                             f"{self.curv_min}, {self.curv_init}, {self.curv_max}")
        if min(self.d_txt, self.d_pcd, self.d_model, self.nhead) < 1 or self.num_layers < 0:
            raise ValueError("d_txt, d_pcd, d_model, nhead must be >= 1 and num_layers >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.agg_temp_init <= 0:
            raise ValueError(f"agg_temp_init must be > 0, got {self.agg_temp_init}")

    @property
    def ffn_dim(self) -> int:
        return self.dim_feedforward if self.dim_feedforward is not None else 4 * self.d_model

    @property
    def embed_dim(self) -> int:
        """Width of an embedding: ``d_model + 1`` on the hyperboloid, ``d_model`` for Euclidean."""
        return self.d_model + 1 if self.geometry == "hyperbolic" else self.d_model

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return _from_dict(cls, d)


@dataclass
class LossConfig:
    """Loss hyper-parameters (paper / official defaults: tau 0.07 fixed, cone weight 0.2, K 0.1)."""

    tau: float = 0.07
    cone_weight: float = 0.2
    K: float = 0.1
    logits: str = "distance"             # paper: -d_L / tau; "inner": official code's <.,.>_L / tau
    positive_reduction: str = "logsumexp"   # "mean": average -log p over the positives (hierarchy positives)
    cone_aperture: float | None = None   # radians: K set per batch so the mean text has this half-aperture

    def __post_init__(self) -> None:
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if self.cone_weight < 0:
            raise ValueError(f"cone_weight must be >= 0, got {self.cone_weight}")
        if self.K <= 0:
            raise ValueError(f"K must be > 0, got {self.K}")
        if self.logits not in ("distance", "inner"):
            raise ValueError(f"logits={self.logits!r}; choose 'distance' or 'inner'")
        if self.positive_reduction not in ("logsumexp", "mean"):
            raise ValueError(f"positive_reduction={self.positive_reduction!r}; choose 'logsumexp' or 'mean'")
        if self.cone_aperture is not None and not 0 < self.cone_aperture < math.pi / 2:
            raise ValueError(f"cone_aperture must lie in (0, pi/2) radians, got {self.cone_aperture}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "LossConfig":
        return _from_dict(cls, d)


@contextmanager
def float32_geometry(device: torch.device | str) -> Iterator[None]:
    """Disable autocast for a block (callers also ``.float()`` their inputs).

    MERU's ``torch.autocast(dtype=torch.float32)`` only upcasts on CUDA; on CPU autocast with
    float32 is disabled with a warning. ``enabled=False`` plus explicit casts works everywhere.
    """
    device_type = torch.device(device).type
    if device_type not in ("cuda", "cpu", "xpu", "mps", "hpu"):
        yield
        return
    with torch.autocast(device_type=device_type, enabled=False):
        yield


class ModalityEncoder(nn.Module):
    """Input projection + Pre-LN transformer stack for one modality: ``(B, L, D_in)`` -> ``(B, L, d_model)``.

    Layers are kept in a ModuleList (not ``nn.TransformerEncoder``) so no nested-tensor fast path
    rewrites padded positions; padded outputs are ignored downstream anyway. Each layer runs through
    :func:`h2arn.attention.encoder_layer_forward` (same parameters, one SDPA call with the boolean mask).
    """

    def __init__(self, d_in: int, d_model: int, nhead: int, num_layers: int, dim_feedforward: int,
                 dropout: float):
        super().__init__()
        self.d_in = d_in
        self.input_proj: nn.Module = nn.Linear(d_in, d_model) if d_in != d_model else nn.Identity()
        self.layers = nn.ModuleList([
            nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward=dim_feedforward, dropout=dropout,
                                       batch_first=True, norm_first=True)
            for _ in range(num_layers)])

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """tokens ``(B, L, D_in)``, mask ``(B, L)`` bool (True = valid) -> ``(B, L, d_model)``."""
        if bool(mask.all()):   # no padding (cloud tokens): no mask, no copy (one host sync, cheap next to a layer)
            valid, x = None, tokens
        else:  # zero padded inputs: NaN/inf garbage there would leak through 0-weight attention (0 * NaN = NaN)
            valid = mask
            x = torch.where(mask.unsqueeze(-1), tokens, torch.zeros((), dtype=tokens.dtype, device=tokens.device))
        x = self.input_proj(x)
        for layer in self.layers:
            x = encoder_layer_forward(layer, x, valid)   # = layer(x, src_key_padding_mask=~mask), one SDPA call
        return x


class H2ARN(nn.Module):
    """H2ARN dual encoder (see module docstring). ``forward`` returns ``(text_emb, cloud_emb)``."""

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else ModelConfig()
        self.txt_encoder = ModalityEncoder(config.d_txt, config.d_model, config.nhead, config.num_layers,
                                           config.ffn_dim, config.dropout)
        self.pcd_encoder = ModalityEncoder(config.d_pcd, config.d_model, config.nhead, config.num_layers,
                                           config.ffn_dim, config.dropout)
        log_alpha0 = math.log(1.0 / math.sqrt(config.d_model))
        self.log_alpha_txt = nn.Parameter(torch.tensor(log_alpha0))
        self.log_alpha_pcd = nn.Parameter(torch.tensor(log_alpha0))
        log_c0 = torch.tensor(math.log(config.curv_init))
        if config.learn_curvature and config.geometry == "hyperbolic":
            self.log_c = nn.Parameter(log_c0)
        else:  # fixed-curvature ablation, or Euclidean baseline (no curvature): a buffer, saved in checkpoints
            self.register_buffer("log_c", log_c0)
        agg = dict(lift=config.lift, geometry=config.geometry, mode=config.aggregation,
                   temp_init=config.agg_temp_init, relative=config.agg_temp_relative)
        self.txt_agg = ContributionAggregator(**agg)
        self.pcd_agg = ContributionAggregator(**agg)

    # ------------------------------------------------------------------ constrained scalars
    @property
    def hyperbolic(self) -> bool:
        return self.config.geometry == "hyperbolic"

    def curvature(self) -> Tensor:
        """Curvature magnitude ``c`` in ``[curv_min, curv_max]`` (float32 scalar; straight-through clamp)."""
        return bounded_exp(self.log_c.float(), self.config.curv_min, self.config.curv_max)

    def alpha(self, modality: str) -> Tensor:
        """Per-modality token scale ``alpha <= 1`` (float32 scalar; straight-through clamp, as MERU's bound)."""
        log_alpha = self._pick(modality, self.log_alpha_txt, self.log_alpha_pcd)
        return bounded_exp(log_alpha.float(), None, 1.0)

    @torch.no_grad()
    def project_parameters_(self) -> None:
        """Clamp the raw log-parameters into their bounds in place. Call after ``optimizer.step()``.

        The accessors already return in-range values; this only stops a raw parameter from drifting
        far past a bound (it would then need many steps to come back).
        """
        if isinstance(self.log_c, nn.Parameter):
            self.log_c.clamp_(math.log(self.config.curv_min), math.log(self.config.curv_max))
        self.log_alpha_txt.clamp_(max=0.0)
        self.log_alpha_pcd.clamp_(max=0.0)
        self.txt_agg.project_parameters_()
        self.pcd_agg.project_parameters_()

    @torch.no_grad()
    def scalars(self) -> dict[str, float]:
        """The learnable scalars as floats, for logging; ``curvature_at_bound`` flags a saturated clamp."""
        values = torch.stack([self.curvature(), self.alpha("text"), self.alpha("cloud"),
                              self.txt_agg.temperature(), self.pcd_agg.temperature()]).tolist()  # one device sync
        c, a_t, a_p, t_t, t_p = values
        at_bound = c <= self.config.curv_min * (1 + 1e-6) or c >= self.config.curv_max * (1 - 1e-6)
        return {"curvature": c, "curvature_at_bound": float(at_bound), "alpha_txt": a_t, "alpha_pcd": a_p,
                "temp_txt": t_t, "temp_pcd": t_p}

    @staticmethod
    def _pick(modality: str, text, cloud):
        if modality in ("text", "txt"):
            return text
        if modality in ("cloud", "pcd", "pc", "3d"):
            return cloud
        raise ValueError(f"modality must be 'text' or 'cloud', got {modality!r}")

    # ------------------------------------------------------------------ encoding
    def _check_inputs(self, tokens: Tensor, mask: Tensor, modality: str) -> Tensor:
        d_expected = self._pick(modality, self.config.d_txt, self.config.d_pcd)
        if tokens.dim() != 3 or tokens.shape[-1] != d_expected:
            raise ValueError(f"{modality} tokens have shape {tuple(tokens.shape)}; expected (B, L, {d_expected}). "
                             f"Fix: build the model with ModelConfig(d_{'txt' if modality == 'text' else 'pcd'}="
                             f"{tokens.shape[-1]}) or use features of width {d_expected}.")
        if mask is None:
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        if mask.shape != tokens.shape[:2]:
            raise ValueError(f"{modality} mask has shape {tuple(mask.shape)}; expected {tuple(tokens.shape[:2])}")
        mask = mask.to(device=tokens.device, dtype=torch.bool)
        if not self.config.mask_padding:  # reproduce the official code: every position is a token
            return torch.ones_like(mask)
        if not bool(mask.any(dim=1).all()):
            bad = (~mask.any(dim=1)).nonzero().flatten()[:5].tolist()
            raise ValueError(f"{modality} samples {bad} (batch rows) have no valid token (mask all False). "
                             "Fix: every caption/cloud needs >= 1 token; check the mask files from feature extraction.")
        return mask

    def _encode_tokens(self, tokens: Tensor, mask: Tensor, modality: str) -> tuple[Tensor, Tensor]:
        mask = self._check_inputs(tokens, mask, modality)
        encoder = self._pick(modality, self.txt_encoder, self.pcd_encoder)
        x = encoder(tokens, mask)
        return x, mask

    def _pool(self, x: Tensor, mask: Tensor, modality: str) -> tuple[Tensor, Tensor]:
        agg = self._pick(modality, self.txt_agg, self.pcd_agg)
        with float32_geometry(x.device):
            z = x.float() * self.alpha(modality)
            c = self.curvature() if self.hyperbolic else None
            return agg(z, mask, c, validate=False)  # mask already checked in _check_inputs

    def encode(self, tokens: Tensor, mask: Tensor | None, modality: str) -> Tensor:
        """tokens ``(B, L, D)``, mask ``(B, L)`` bool -> embeddings ``(B, embed_dim)`` (float32)."""
        x, mask = self._encode_tokens(tokens, mask, modality)
        return self._pool(x, mask, modality)[0]

    def encode_text(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        """Text tokens ``(B, L_t, d_txt)`` + mask -> ``(B, d_model+1)`` hyperboloid points (or unit vectors)."""
        return self.encode(tokens, mask, "text")

    def encode_cloud(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        """Cloud tokens ``(B, L_p, d_pcd)`` + mask -> ``(B, d_model+1)`` hyperboloid points (or unit vectors)."""
        return self.encode(tokens, mask, "cloud")

    def contributions(self, tokens: Tensor, mask: Tensor | None, modality: str) -> Tensor:
        """Aggregation weights ``(B, L)`` (0 on padding, rows sum to 1), e.g. to colour a point cloud."""
        x, mask = self._encode_tokens(tokens, mask, modality)
        return self._pool(x, mask, modality)[1]

    def forward(self, txt: Tensor, txt_mask: Tensor | None, pc: Tensor, pc_mask: Tensor | None
                ) -> tuple[Tensor, Tensor]:
        """Encode a batch of linked (caption, cloud) pairs: returns ``(text_emb (B, E), cloud_emb (B', E))``."""
        return self.encode_text(txt, txt_mask), self.encode_cloud(pc, pc_mask)

    # ------------------------------------------------------------------ comparing
    def similarity(self, t_emb: Tensor, p_emb: Tensor) -> Tensor:
        """Scores ``(N, M)`` between text ``(N, E)`` and cloud ``(M, E)`` embeddings; higher = closer.

        Hyperbolic: ``-d_L`` from one GEMM (:func:`h2arn.lorentz.pairwise_dist`). ``d_L`` is a
        monotone function of the Lorentz inner product, so the ranking equals the official code's
        inner-product ranking. Euclidean: cosine similarity.
        """
        with float32_geometry(t_emb.device):
            t, p = t_emb.float(), p_emb.float()
            if self.hyperbolic:
                return -L.pairwise_dist(t, p, self.curvature())
            return t @ p.transpose(-1, -2)

    # ------------------------------------------------------------------ optimiser helper
    def param_groups(self, weight_decay: float, scalar_lr: float | None = None) -> list[dict]:
        """AdamW groups: weight decay on weight matrices only (MERU practice).

        Excluded: the learnable scalars (``log_c``, ``log_alpha_*``, aggregation ``log_temp``),
        biases and LayerNorm weights, i.e. every parameter with fewer than 2 dimensions. Decaying
        ``log c`` / ``log alpha`` would pull them toward ``c = 1`` / ``alpha = 1`` for no reason.

        ``scalar_lr``: the learnable scalars get their own learning rate (a third group). With the
        shared lr of 2e-3, Adam moves a log-parameter by at most ~2e-3 per step, so within a few hundred
        steps c, alpha and T barely move (replication audit: c 1 -> 0.94) and the ablations that fix
        them test nothing; a larger lr lets them move within the budget.
        """
        decay, no_decay, scalars = [], [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if scalar_lr is not None and p.dim() == 0 and name.split(".")[-1] in SCALAR_NAMES:
                scalars.append(p)
            else:
                (decay if p.dim() >= 2 else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": float(weight_decay)},
                  {"params": no_decay, "weight_decay": 0.0}]
        if scalars:
            groups.append({"params": scalars, "weight_decay": 0.0, "lr": float(scalar_lr)})
        return groups
