"""Relevance from caption targets, computed by hand on a tiny split, and on the generated ci data."""
from __future__ import annotations

import numpy as np
import pytest

from h2arn.data.relevance import relevance_grades, relevance_matrix, satisfies

ARM = ["furniture", "seat", "chair", "armchair"]
SIDE = ["furniture", "seat", "chair", "side chair"]
STOOL = ["furniture", "seat", "stool", "bar stool"]


def cap(shape, path, attrs, level, node, named=None, group=None, inst=False):
    target = {"level": level, "node": node, "named": named or {}}
    if inst:
        target["shape"] = shape
    return {"shape": shape, "subset": "Elephant", "taxonomy_path": path, "attributes": attrs, "target": target,
            "caption_group": group}


def test_hand_computed_relevance_and_grades():
    meta = [cap("a", ARM, {"color": "red"}, 0, ARM[:1], group=1),          # "a piece of furniture": all three
            cap("a", ARM, {"color": "red"}, 4, ARM, {"color": "red"}, 2),   # "a red armchair": a only
            cap("b", SIDE, {"color": "red"}, 2, SIDE[:3], group=3),         # "a chair": a and b
            cap("c", STOOL, {"color": "red"}, 5, STOOL, inst=True, group=4),  # instance: c only ...
            cap("b", SIDE, {"color": "red"}, 5, SIDE, inst=True, group=4)]    # ... but b has the same text
    txt_to_pc = [0, 0, 1, 2, 1]
    rel = relevance_matrix(meta, txt_to_pc)
    assert rel.tolist() == [[True, True, True], [True, False, False], [True, True, False],
                            [False, True, True], [False, True, True]]
    g = relevance_grades(meta, txt_to_pc)
    assert g[0].tolist() == [2, 2, 2]          # 1 level matched + relevant
    assert g[1].tolist() == [5, 3, 2]          # full path + relevant; side chair shares 3 levels; stool 2
    assert g[2].tolist() == [4, 4, 2]
    assert satisfies({"taxonomy_path": ARM, "attributes": {"color": "blue"}}, meta[1]["target"]) is False


def test_old_meta_is_refused():
    with pytest.raises(ValueError, match="benchmark v4"):
        relevance_matrix([{"shape": "x"}], [0])


def test_ci_relevance_has_the_expected_ceilings(tmp_path):
    from h2arn.data import generate, load_split

    root = generate("ci", 0, tmp_path / "d", progress=False, leaves=4)
    recs = load_split(root, "Elephant", "test")
    meta, txt_to_pc = [], []
    for j, r in enumerate(recs):
        for k, _ in enumerate(r.captions):
            meta.append({"shape": r.name, "subset": r.subset, "taxonomy_path": r.meta["taxonomy_path"],
                         "attributes": r.meta["attributes"], "target": r.meta["caption_targets"][k],
                         "caption_group": r.meta["caption_groups"][k], "level": r.meta["caption_levels"][k]})
            txt_to_pc.append(j)
    rel = relevance_matrix(meta, txt_to_pc)
    levels = np.array([m["level"] for m in meta])
    per_level = [rel[levels == lv].sum(1).mean() for lv in range(6)]
    assert per_level[3] == pytest.approx(3.0)   # a leaf caption: the 3 test shapes of its leaf
    assert per_level[0] >= per_level[1] >= per_level[2] >= per_level[3] >= per_level[4] >= per_level[5] >= 1.0
