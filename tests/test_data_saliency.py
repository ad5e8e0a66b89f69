"""RISD helpers: controlled redundancy, fragments, pooling via h2arn.aggregation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from h2arn.data import saliency as S


def test_views_have_requested_redundancy_and_same_shape():
    a, b = S.make_views(3, 0.25, n_points=400, seed=0)
    for va, vb in zip(a, b):
        assert len(va.xyz) == 400 and (va.flag > 0).mean() == pytest.approx(0.25, abs=0.01)
        assert not np.allclose(va.xyz, vb.xyz)  # independent scans
    clean = S.make_views(3, 0.0, n_points=400, seed=0)[0]
    assert all((v.flag == 0).all() for v in clean)


def test_fragments_partition_points_and_flag_redundancy():
    v = S.make_views(1, 0.5, n_points=600, seed=1)[0][0]
    tok, red, assign = S.fragment_tokens(v, 16)
    assert tok.shape == (16, 12) and np.isfinite(tok).all()
    assert set(np.unique(assign)) == set(range(16))
    assert 0 < red.mean() < 1


def test_contribution_weights_downweight_outlier_tokens():
    rng = np.random.default_rng(0)
    tokens = rng.normal(scale=0.1, size=(1, 10, 4))
    tokens[0, :2] += 3.0  # two far-away tokens
    w = S.contribution_weights_np(tokens, temperature=0.3)[0]
    assert w.sum() == pytest.approx(1.0)
    assert w[:2].max() < w[2:].min()
    w_neg = S.contribution_weights_np(tokens, temperature=-0.3)[0]
    assert w_neg[:2].min() > w_neg[2:].max()  # a negative temperature inverts the weighting


def test_recall_at_1_and_pooling_shapes():
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(5, 8, 4))
    emb = S.pooled_embeddings(tokens, "mean")
    assert emb.shape == (5, 5)
    assert S.recall_at_1(emb, emb) == 1.0
    assert S.recall_at_1(emb, emb.flip(0)) < 1.0
    keep = np.ones((5, 8), dtype=bool); keep[:, 0] = False
    assert not torch.allclose(S.pooled_embeddings(tokens, "mean", keep=keep), emb)
    keep[2] = False  # nothing kept in row 2: it falls back to all its tokens instead of failing
    pooled = S.pooled_embeddings(tokens, "mean", keep=keep)
    assert torch.allclose(pooled[2], emb[2]) and torch.isfinite(pooled).all()
