"""HRC helpers: trees, closure, metrics (exact on hand-made cases), and a small real fit."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from h2arn import lorentz as L
from h2arn.data.hierarchy import (Embedding, average_distortion, balanced_tree, embed_tree, mean_average_precision,
                                  taxonomy_tree_from_metadata)


def test_balanced_tree_structure():
    t = balanced_tree(2, 3)
    assert t.n == 15 and np.bincount(t.depth).tolist() == [1, 2, 4, 8]
    rel = t.related()
    assert rel[0, 1:].all()                      # root relates to everyone
    assert rel.sum() == 2 * sum(int(d) for d in t.depth)  # each node has depth-many ancestors
    d = t.distances()
    leaves = np.flatnonzero(t.depth == 3)
    assert d[leaves[0], leaves[1]] == 2 and d[leaves[0], leaves[-1]] == 6


def test_map_is_one_when_related_are_nearest_and_lower_for_random():
    t = balanced_tree(3, 3)
    rel = t.related()
    assert mean_average_precision(np.where(rel, 1.0, 2.0), rel) == pytest.approx(1.0)
    # the raw tree metric ties siblings (unrelated) with grandparents (related): MAP below 1
    assert 0.5 < mean_average_precision(t.distances(), rel) < 1.0
    rng = np.random.default_rng(0)
    x = rng.normal(size=(t.n, 2))
    rand = np.linalg.norm(x[:, None] - x[None], axis=-1)
    assert mean_average_precision(rand, rel) < 0.6


def test_distortion_zero_for_isometry():
    t = balanced_tree(2, 2)
    d = t.distances()
    assert average_distortion(d, d) == 0.0
    assert average_distortion(2 * d, d) == pytest.approx(1.0)


def test_taxonomy_tree_depths_match_caption_levels():
    meta = {"shapes": {
        "vase_1": {"subset": "Elephant", "super_category": "vessel", "category": "vase", "split": "train",
                   "attributes": {"material": "glass"}},
        "vase_2": {"subset": "Elephant", "super_category": "vessel", "category": "vase", "split": "test",
                   "attributes": {"material": "glass"}},
        "Area_1_office_1": {"subset": "S3DIS", "super_category": "workspace", "category": "office",
                            "split": "train", "attributes": {"size": "large"}},
    }}
    t = taxonomy_tree_from_metadata(meta)
    depth = dict(zip(t.names, t.depth))
    assert depth["vessel"] == 2 and depth["vase"] == 3 and depth["glass vase"] == 4 and depth["vase_1"] == 5
    assert t.names.count("glass vase") == 1  # shared attribute node
    assert "vase_2" not in taxonomy_tree_from_metadata(meta, splits=("train",)).names


@pytest.mark.parametrize("geometry", ["euclidean", "lorentz"])
def test_embedding_learns_the_tree(geometry):
    torch.manual_seed(0)
    t = balanced_tree(2, 3)
    emb = embed_tree(t, 2, geometry, "ranking", steps=150)
    score = mean_average_precision(emb.pairwise().numpy(), t.related())
    assert score > 0.6, score
    if geometry == "lorentz":  # points on the hyperboloid
        x = emb.points
        assert torch.allclose(L.inner(x, x), torch.full((t.n,), -1.0, dtype=x.dtype), atol=1e-6)
    fit = embed_tree(t, 4, geometry, "distortion", steps=200)
    assert average_distortion(fit.pairwise().numpy(), t.distances()) < 0.35


def test_bad_arguments():
    t = balanced_tree(2, 1)
    with pytest.raises(ValueError, match="geometry"):
        embed_tree(t, 2, "spherical")
    with pytest.raises(ValueError, match="objective"):
        embed_tree(t, 2, "lorentz", "contrastive")


def test_v4_taxonomy_tree_depths_are_caption_levels_plus_two():
    from h2arn.data.hierarchy import caption_level_of_depth

    path = ["furniture", "seat", "chair", "armchair"]
    meta = {"shapes": {f"armchair_{i}": {"subset": "Elephant", "taxonomy_path": path, "super_category": "furniture",
                                         "category": "chair", "split": "train", "attributes": {"material": m}}
                       for i, m in enumerate(["wooden", "wooden", "metal"])}}
    t = taxonomy_tree_from_metadata(meta)
    depth = dict(zip(t.names, t.depth))
    assert [depth[n] for n in path] == [2, 3, 4, 5]            # caption levels 0..3
    assert depth["wooden armchair"] == 6 and depth["armchair_0"] == 7  # levels 4 (attributes) and 5 (instance)
    assert caption_level_of_depth(t) == {2: 0, 3: 1, 4: 2, 5: 3, 6: 4, 7: 5}
    assert len(taxonomy_tree_from_metadata(meta, max_shapes_per_category=1).names) == 1 + 1 + 4 + 1 + 1
