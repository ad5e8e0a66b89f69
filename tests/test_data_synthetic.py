"""The embedded benchmark v4: deterministic, fast, a deep and wide taxonomy, captions at every level, identical
captions grouped, flagged redundancy that never changes normalisation, and the study knobs."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest

from h2arn.data import ensure_synthetic, generate, load_metadata, load_split
from h2arn.data.captions import LEVELS
from h2arn.data.synthetic import PROFILES, caption_key, format_points, make_artefact, make_scene
from h2arn.data.taxonomy import (DISPLAY, TAXONOMY, TREE, all_categories, all_leaves, leaf_path, super_category_of,
                                 taxonomy_tree)

SPLITS = ("train", "val", "test")


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def ci_root(tmp_path_factory) -> Path:
    return generate("ci", seed=0, out=tmp_path_factory.mktemp("gen") / "h2synth-ci", progress=False)


def test_same_seed_same_bytes_and_fast(ci_root, tmp_path):
    t0 = time.perf_counter()
    again = generate("ci", seed=0, out=tmp_path / "again", progress=False)
    elapsed = time.perf_counter() - t0
    assert _tree_hash(again) == _tree_hash(ci_root)
    assert elapsed < 60.0, f"ci generation took {elapsed:.1f} s"  # ~6 s of CPU; the margin is for a loaded machine


def test_other_seed_differs(ci_root, tmp_path):
    table0, _, caps0 = make_artefact(3, "amphora", seed=0, n_points=256)
    table1, _, caps1 = make_artefact(3, "amphora", seed=1, n_points=256)
    assert not np.array_equal(table0, table1)
    assert format_points(table0) == format_points(make_artefact(3, "amphora", seed=0, n_points=256)[0])


def test_layout_and_sizes(ci_root):
    cfg = PROFILES["ci"]
    meta = load_metadata(ci_root)
    assert meta["complete"] and meta["profile"] == "ci"
    n_leaves = len(all_leaves())
    assert len(meta["shapes"]) == n_leaves * (cfg.train_per_leaf + cfg.val_per_leaf + cfg.test_per_leaf)
    per_split = {s: sum(1 for m in meta["shapes"].values() if m["split"] == s) for s in SPLITS}
    assert per_split["test"] >= 150 and per_split["val"] >= 100, per_split
    for split in SPLITS:
        assert (ci_root / "Elephant" / f"Elephant_caption_{split}.json").is_file()
        assert (ci_root / "S3DIS" / f"S3DIS_{split}_captions.json").is_file()
    rec = load_split(ci_root, "Elephant", "train")[0]
    assert rec.points.shape == (cfg.artefact_points, 6) and rec.points.dtype == np.float32
    assert rec.extra.shape == (cfg.artefact_points, 2)
    # the clean shape fills the unit sphere; rgb in 0..1
    salient = rec.points[rec.extra[:, 1] == 0, :3]
    assert np.linalg.norm(salient, axis=1).max() == pytest.approx(1.0, abs=1e-3)
    assert rec.points[:, 3:].min() >= 0 and rec.points[:, 3:].max() <= 1
    scene = load_split(ci_root, "S3DIS", "train")[0]
    assert scene.name.split("_")[0] == "Area" and scene.name.split("_")[1].isdigit()


def test_taxonomy_is_deep_and_wide():
    assert len(all_leaves()) >= 40
    assert len(set(all_leaves())) == len(all_leaves()), "a leaf sits under two categories"
    for leaf in all_leaves():
        path = leaf_path(leaf)
        assert len(path) >= 4 and len(set(path)) == len(path), path  # >= 4 is-a levels above the instance
        assert all(node in DISPLAY for node in path)
    for subset in TREE:  # both halves are deep, with several leaves each
        assert len(all_leaves(subset)) >= 10
    # the tree as JSON: leaves at depth 3 (caption level 3) under category / mid / super
    tree = taxonomy_tree()

    def depths(node, d=0):
        return [d] if not node["children"] else [x for c in node["children"] for x in depths(c, d + 1)]
    assert set(depths(tree)) == {5}  # root > subset > super > mid > category > leaf
    # synonyms never name another node (a caption names exactly one node)
    words = {}
    for node, syns in DISPLAY.items():
        for w in syns:
            assert words.setdefault(w, node) == node, (w, node, words[w])
    # the real ShapeNet classes of ../shared/data/real_shapes_dev are in the taxonomy
    for cat in ("airplane", "bathtub", "bench", "bottle", "chair", "cup", "piano", "rifle", "toilet", "vase"):
        assert cat in all_categories("Elephant")


def test_taxonomy_consistency(ci_root):
    meta = load_metadata(ci_root)
    for name, shape in meta["shapes"].items():
        path = shape["taxonomy_path"]
        assert tuple(path) == leaf_path(shape["leaf"])
        assert [shape["super_category"], shape["mid_category"], shape["category"], shape["leaf"]] == path
        assert shape["category"] in TAXONOMY[shape["subset"]][shape["super_category"]]
        assert super_category_of(shape["category"]) == shape["super_category"]
    # every split holds several shapes of every leaf
    for split in SPLITS:
        counts = {leaf: 0 for leaf in all_leaves()}
        for shape in meta["shapes"].values():
            if shape["split"] == split:
                counts[shape["leaf"]] += 1
        assert min(counts.values()) >= 2, (split, min(counts, key=counts.get))


def test_captions_at_every_level_name_their_node(ci_root):
    for subset in ("Elephant", "S3DIS"):
        recs = load_split(ci_root, subset, "train")
        lengths = {lvl: [] for lvl in LEVELS}
        for rec in recs:
            levels = rec.meta["caption_levels"]
            assert levels == list(LEVELS), rec.name
            targets = rec.meta["caption_targets"]
            path = rec.meta["taxonomy_path"]
            for lvl, cap, target in zip(levels, rec.captions, targets):
                lengths[lvl].append(len(cap.split()))
                assert target["level"] == lvl
                if lvl <= 3:  # the caption names the node at its level, in one of that node's words
                    assert target["node"] == path[:lvl + 1]
                    assert any(w.lower() in cap.lower() for w in DISPLAY[path[lvl]]), (lvl, cap)
                    deeper = [w for node in path[lvl + 1:] for w in DISPLAY[node] if w not in DISPLAY[path[lvl]]]
                    assert not any(f" {w.lower()}" in f" {cap.lower()}" for w in deeper if len(w) > 3), (lvl, cap)
                elif lvl == 4:
                    assert target["node"] == path
                    assert all(rec.meta["attributes"][k] == v for k, v in target["named"].items())
                else:
                    assert target["shape"] == rec.name
        means = [np.mean(lengths[lvl]) for lvl in LEVELS]
        assert means[0] < means[5] and means[3] < means[5] and means[4] < means[5], (subset, means)


def test_identical_captions_share_a_group(ci_root):
    meta = load_metadata(ci_root)
    recs = [r for sub in ("Elephant", "S3DIS") for s in SPLITS for r in load_split(ci_root, sub, s)]
    by_group = {}
    for r in recs:
        for cap, g, size in zip(r.captions, r.meta["caption_groups"], r.meta["caption_group_sizes"]):
            by_group.setdefault(g, []).append((caption_key(cap), size))
    for g, items in by_group.items():
        assert len({k for k, _ in items}) == 1 and all(size == len(items) for _, size in items)
    assert len(by_group) == meta["n_caption_groups"]
    assert any(len(items) > 1 for items in by_group.values())  # generic captions do repeat
    assert caption_key("A chair.") == caption_key("a  chair")


def test_split_disjoint_and_proportions(ci_root):
    meta = load_metadata(ci_root)
    for subset, splits in meta["splits"].items():
        sets = [set(splits[s]) for s in SPLITS]
        assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
        total = sum(len(s) for s in sets)
        assert all(sets) and len(sets[2]) / total >= 0.15
        for split, names in splits.items():
            for name in names:
                assert meta["shapes"][name]["split"] == split
    # files on disk agree with the metadata split
    recs = load_split(ci_root, "Elephant", "test")
    assert {r.name for r in recs} == set(meta["splits"]["Elephant"]["test"])


def test_redundancy_flags_match_metadata(ci_root):
    for rec in load_split(ci_root, "Elephant", "val") + load_split(ci_root, "S3DIS", "val"):
        flags = rec.extra[:, 1].astype(int)
        assert set(np.unique(flags)) <= {0, 1, 2, 3}
        assert abs((flags > 0).mean() - rec.meta["redundant_fraction"]) < 1e-3
        assert (flags > 0).mean() < 0.5  # a minority
        part_ids = rec.extra[:, 0].astype(int)
        assert (part_ids[flags == 0] >= 0).all()          # salient points always belong to a part
        assert (part_ids[(flags == 2) | (flags == 3)] == -1).all()
        phrases = rec.meta["parts"]
        assert phrases and all(0 <= p["part_id"] for p in phrases)


def test_redundancy_does_not_change_the_shape_or_its_normalisation():
    clean, _, caps0 = make_artefact((5, 0, 1), "armchair", seed=0, n_points=600, redundancy=(0.0, 0.0))
    noisy, _, caps1 = make_artefact((5, 0, 1), "armchair", seed=0, n_points=600, redundancy=(0.3, 0.3))
    assert caps0 == caps1
    salient = noisy[noisy[:, 7] == 0, :3]
    # same object, same frame: the salient points span the same box as the clean cloud
    np.testing.assert_allclose(salient.min(0), clean[:, :3].min(0), atol=0.05)
    np.testing.assert_allclose(salient.max(0), clean[:, :3].max(0), atol=0.05)
    assert np.linalg.norm(salient, axis=1).max() <= 1.0 + 1e-6


def test_scene_and_artefact_builders_cover_all_leaves():
    for i, leaf in enumerate(all_leaves("Elephant")):
        table, meta, caps = make_artefact(i, leaf, seed=5, n_points=300)
        assert table.shape == (300, 8) and np.isfinite(table).all(), leaf
        assert [c["level"] for c in caps] == list(LEVELS)
        assert meta["leaf"] == leaf and "material" in meta["attributes"]
    for i, leaf in enumerate(all_leaves("S3DIS")):
        table, meta, caps = make_scene(i, leaf, seed=5, n_points=400)
        assert table.shape == (400, 8) and np.isfinite(table).all()
        assert (table[:, 7] == 2).mean() > 0.2  # walls and floor
        assert np.abs(table[:, :3]).max() < 1.2   # normalised by the room's box


def test_knobs_keep_val_and_test_and_change_what_they_say(tmp_path):
    small = generate("ci", 0, tmp_path / "small", progress=False, leaves=3, depth=2, train_per_leaf=1,
                     redundancy=(0.0, 0.05))
    meta = load_metadata(small)
    assert meta["knobs"] == {"leaves": 3, "depth": 2, "train_per_leaf": 1, "redundancy": [0.0, 0.05]}
    assert len(meta["leaves"]) == 6
    assert {tuple(s["caption_levels"]) for s in meta["shapes"].values()} == {(0, 3, 4, 5)}
    assert sum(s["split"] == "train" for s in meta["shapes"].values()) == 6
    assert max(s["redundant_fraction"] for n, s in meta["shapes"].items() if s["subset"] == "Elephant") <= 0.05
    with pytest.raises(ValueError, match="depth"):
        generate("ci", 0, tmp_path / "bad", progress=False, depth=7)


def test_ensure_synthetic_reuses_and_refuses_foreign_folder(ci_root, tmp_path):
    from h2arn.data import DatasetError

    stamp = (ci_root / "metadata.json").stat().st_mtime_ns
    assert ensure_synthetic("ci", 0, ci_root) == ci_root
    assert (ci_root / "metadata.json").stat().st_mtime_ns == stamp  # not rebuilt
    foreign = tmp_path / "mine"
    (foreign / "Elephant").mkdir(parents=True)
    with pytest.raises(DatasetError, match="metadata.json"):
        ensure_synthetic("ci", 0, foreign)


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    import h2arn.data.synthetic as syn

    calls = {"n": 0}
    real = syn.make_scene

    def boom(*a, **k):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(syn, "make_scene", boom)
    with pytest.raises(KeyboardInterrupt):
        syn.generate("ci", 0, tmp_path / "h2synth-ci", progress=False)
    assert not (tmp_path / "h2synth-ci").exists()
    assert list(tmp_path.iterdir()) == []


def test_full_profile_size_is_declared():
    cfg = PROFILES["full"]
    shapes = len(all_leaves()) * (cfg.train_per_leaf + cfg.val_per_leaf + cfg.test_per_leaf)
    assert shapes * len(LEVELS) >= 9000
    assert cfg.artefact_points == 2048 and cfg.scene_points == 4096


def test_captions_json_is_official_format(ci_root):
    data = json.loads((ci_root / "Elephant" / "Elephant_caption_train.json").read_text())
    assert set(data) == {"result"}
    assert all(isinstance(v, list) and all(isinstance(c, str) for c in v) for v in data["result"].values())


def test_stale_temporary_of_a_dead_generator_is_removed(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(proc.stdout)
    stale = tmp_path / f".h2synth-ci.tmp-{dead_pid}-deadbeef"
    (stale / "Elephant").mkdir(parents=True)
    generate("ci", 0, tmp_path / "h2synth-ci", progress=False)
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h2synth-ci"]
