"""The zero-shot bridge and the class-level metrics it is measured with (no model downloads; seconds)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from h2arn.bridge import (REAL_SHAPE_QUERIES, RealShapes, ZeroShotBridge, load_real_shapes, map_by_query_type,
                          paired_map_difference, query_list)
from h2arn.evaluate import average_precision, chance_average_precision


def test_average_precision_known_values():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6], [0.1, 0.2, 0.3, 0.4], [1.0, 0.0, 0.5, 0.2]])
    relevant = torch.tensor([[True, False, True, False], [True, False, False, False], [False, False, False, False]])
    ap = average_precision(scores, relevant)
    assert ap[0].item() == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert ap[1].item() == pytest.approx(1 / 4)
    assert torch.isnan(ap[2])


@pytest.mark.parametrize("r,n", [(1, 10), (3, 10), (5, 48), (10, 10)])
def test_chance_average_precision_is_the_mean_over_random_rankings(r, n):
    rng = np.random.default_rng(0)
    rel = torch.zeros(4000, n, dtype=torch.bool)
    rel[:, :r] = True
    scores = torch.as_tensor(rng.random((4000, n)))
    mc = float(average_precision(scores, rel).mean())
    assert float(chance_average_precision(r, n)) == pytest.approx(mc, abs=0.01)


class _FakeText:
    name = "MiniLM"

    def sentence_embeddings(self, texts):
        # one-hot on the class word each text contains (the class prompts are "a <name>")
        vocab = ["chair", "cup", "vase"]
        out = torch.zeros(len(texts), 3)
        for i, t in enumerate(texts):
            for j, w in enumerate(vocab):
                out[i, j] = float(w in t)
        return torch.nn.functional.normalize(out + 1e-3, dim=-1)


class _FakeClassifier(torch.nn.Module):
    def classify(self, pts):     # class = the axis with the largest spread
        return 20.0 * pts.std(dim=1)


def test_bridge_scores_rank_shapes_of_the_query_class_first():
    bridge = ZeroShotBridge(_FakeText(), _FakeClassifier(), ["chair", "cup", "vase"])
    rng = np.random.default_rng(0)
    clouds = [rng.normal(size=(n, 3)) * s for n, s in
              ((1500, [1, 0.1, 0.1]), (600, [0.1, 1, 0.1]), (2000, [0.1, 0.1, 1]), (900, [1, 0.1, 0.1]))]
    post = bridge.class_posterior(clouds)             # mixed sizes: batched by size, FPS above 1024
    assert post.shape == (4, 3) and torch.allclose(post.sum(1), torch.ones(4))
    s = bridge.scores(["a chair please", "a vase"], post)
    assert set(torch.topk(s[0], 2).indices.tolist()) == {0, 3}
    assert int(s[1].argmax()) == 2
    shapes = RealShapes(["a", "b", "c", "d"], clouds, ["chair", "cup", "vase", "chair"])
    queries = {"class name": [("a chair", ("chair",)), ("a vase", ("vase",))], "abstract": [("a vessel", ("cup", "vase"))]}
    scores = bridge.scores(query_list(queries), post)
    rows = map_by_query_type({"bridge": scores, "random": torch.rand(3, 4)}, shapes, queries, n_boot=200)
    assert [(r["method"], r["query type"]) for r in rows] == [("bridge", "class name"), ("bridge", "abstract"),
                                                              ("random", "class name"), ("random", "abstract")]
    assert rows[0]["mAP"] == pytest.approx(1.0) and rows[0]["ci_low"] <= rows[0]["mAP"] <= rows[0]["ci_high"]
    diff = paired_map_difference(scores, scores, shapes, queries, n_boot=50)
    assert all(d["mean_diff"] == 0 for d in diff)


def test_query_sets_and_real_shapes_when_present():
    assert len(query_list()) == sum(len(v) for v in REAL_SHAPE_QUERIES.values())
    real = load_real_shapes()
    if real is None:
        pytest.skip("../shared/data/real_shapes_dev not present")
    classes = set(real.classes)
    for qs in REAL_SHAPE_QUERIES.values():
        for _, cls in qs:
            assert set(cls) <= classes
    assert len(real.ids) == len(real.clouds) == len(real.classes) and real.clouds[0].shape[1] == 3
