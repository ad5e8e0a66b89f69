"""The transformer layer's forward pass, written with ``F.scaled_dot_product_attention``.

Why not simply call ``nn.TransformerEncoderLayer``: in training mode (and whenever a padding mask is
given) it goes through ``nn.MultiheadAttention``'s general path, which re-canonicalises and merges
the padding mask into a float ``(B, H, L, L)`` bias every call, checks it for fully masked rows,
and splits/merges heads with extra copies. :func:`encoder_layer_forward` runs the *same* layer (same
parameters, same state-dict keys, same dropout places: attention weights, after attention, inside
and after the feed-forward block) with one SDPA call that takes the boolean padding mask directly,
and no mask at all when a batch has no padding (cloud tokens). SDPA picks the fused kernel where
the device has one (CPU flash attention when no attention dropout is active; CUDA flash or
memory-efficient kernels with dropout). Measured in ``benchmarks/bench_train.py``.

Only the Pre-LN, ``batch_first`` layers that :class:`h2arn.model.ModalityEncoder` builds are
supported; anything else falls back to the module's own forward.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["encoder_layer_forward"]


def _supported(layer: nn.TransformerEncoderLayer) -> bool:
    attn = layer.self_attn
    return (layer.norm_first and attn.batch_first and attn._qkv_same_embed_dim and attn.in_proj_bias is not None
            and attn.bias_k is None and not attn.add_zero_attn)


def encoder_layer_forward(layer: nn.TransformerEncoderLayer, x: Tensor, valid: Tensor | None) -> Tensor:
    """One Pre-LN encoder layer: ``x (B, L, D)``, ``valid (B, L)`` bool (True = real token) or ``None`` (no padding).

    Equal to ``layer(x, src_key_padding_mask=~valid)`` up to float rounding (see tests/test_model.py).
    """
    if not _supported(layer):
        return layer(x, src_key_padding_mask=None if valid is None else ~valid)
    attn = layer.self_attn
    batch, length, width = x.shape
    heads = attn.num_heads
    h = layer.norm1(x)
    qkv = F.linear(h, attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)
    mask = None if valid is None else valid[:, None, None, :]           # broadcast over heads and queries
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=attn.dropout if layer.training else 0.0)
    o = o.transpose(1, 2).reshape(batch, length, width)
    x = x + layer.dropout1(attn.out_proj(o))
    h = layer.norm2(x)
    return x + layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(h)))))
