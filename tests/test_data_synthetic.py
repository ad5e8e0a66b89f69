"""The embedded benchmark: deterministic, fast, consistent taxonomy/levels/splits, flagged redundancy."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest

from h2arn.data import ensure_synthetic, generate, load_metadata, load_split
from h2arn.data.captions import LEVELS
from h2arn.data.synthetic import PROFILES, format_points, make_artefact, make_scene
from h2arn.data.taxonomy import TAXONOMY, all_categories, super_category_of, taxonomy_tree

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
    assert elapsed < 20.0, f"ci generation took {elapsed:.1f} s"


def test_other_seed_differs(ci_root, tmp_path):
    table0, _, caps0 = make_artefact(3, "vase", seed=0, n_points=256)
    table1, _, caps1 = make_artefact(3, "vase", seed=1, n_points=256)
    assert not np.array_equal(table0, table1)
    assert format_points(table0) == format_points(make_artefact(3, "vase", seed=0, n_points=256)[0])


def test_layout_and_sizes(ci_root):
    cfg = PROFILES["ci"]
    meta = load_metadata(ci_root)
    assert meta["complete"] and meta["profile"] == "ci"
    assert len(meta["shapes"]) == cfg.n_artefacts + cfg.n_scenes
    assert meta["n_pairs"] >= 300
    for split in SPLITS:
        assert (ci_root / "Elephant" / f"Elephant_caption_{split}.json").is_file()
        assert (ci_root / "S3DIS" / f"S3DIS_{split}_captions.json").is_file()
    rec = load_split(ci_root, "Elephant", "train")[0]
    assert rec.points.shape == (cfg.artefact_points, 6) and rec.points.dtype == np.float32
    assert rec.extra.shape == (cfg.artefact_points, 2)
    # unit sphere, rgb in 0..1
    assert np.linalg.norm(rec.points[:, :3], axis=1).max() <= 1.0 + 1e-4
    assert rec.points[:, 3:].min() >= 0 and rec.points[:, 3:].max() <= 1
    scene = load_split(ci_root, "S3DIS", "train")[0]
    assert scene.name.split("_")[0] == "Area" and scene.name.split("_")[1].isdigit()


def test_taxonomy_consistency(ci_root):
    meta = load_metadata(ci_root)
    tree = taxonomy_tree()
    leaves = {c["name"] for s in tree["children"] for sup in s["children"] for c in sup["children"]}
    assert leaves == set(all_categories())
    assert len(all_categories()) == len(set(all_categories())), "a category sits under two super-categories"
    for name, shape in meta["shapes"].items():
        assert shape["category"] in TAXONOMY[shape["subset"]][shape["super_category"]]
        assert super_category_of(shape["category"]) == shape["super_category"]
        assert name.startswith(shape["category"]) if shape["subset"] == "Elephant" else shape["category"] in name
    # every category appears in the ci data
    assert {s["category"] for s in meta["shapes"].values()} == set(all_categories())


def test_caption_levels_abstract_to_specific(ci_root):
    for subset in ("Elephant", "S3DIS"):
        recs = load_split(ci_root, subset, "train")
        lengths = {lvl: [] for lvl in LEVELS}
        for rec in recs:
            levels = rec.meta["caption_levels"]
            assert sorted(levels) == list(LEVELS), rec.name
            for lvl, cap in zip(levels, rec.captions):
                lengths[lvl].append(len(cap.split()))
            # the category word appears from level 1 on, never at level 0 (which names the super-category)
            cat_words = {"vase", "bottle", "cup", "mug", "bowl", "jar", "pot", "cauldron", "ding", "chair", "table",
                         "stool", "lamp", "statue", "bust", "pagoda", "tower", "elephant"}
            if subset == "Elephant":
                lvl0 = rec.captions[levels.index(0)].lower()
                assert not (set(lvl0.rstrip(".").split()) & cat_words), lvl0
        means = [np.mean(lengths[lvl]) for lvl in LEVELS]
        assert means[0] < means[2] < means[3], (subset, means)
        assert means[1] < means[3]


def test_split_disjoint_and_proportions(ci_root):
    meta = load_metadata(ci_root)
    for subset, splits in meta["splits"].items():
        sets = [set(splits[s]) for s in SPLITS]
        assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
        total = sum(len(s) for s in sets)
        assert len(sets[0]) / total > 0.55 and len(sets[2]) / total >= 0.15
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
        assert (flags == 0).sum() > 0.4 * len(flags)
        part_ids = rec.extra[:, 0].astype(int)
        assert (part_ids[flags == 0] >= 0).all()          # salient points always belong to a part
        assert (part_ids[(flags == 2) | (flags == 3)] == -1).all()
        phrases = rec.meta["parts"]
        assert phrases and all(0 <= p["part_id"] for p in phrases)


def test_scene_and_artefact_builders_cover_all_categories():
    for i, cat in enumerate(all_categories("Elephant")):
        table, meta, caps = make_artefact(i, cat, seed=5, n_points=300)
        assert table.shape == (300, 8) and np.isfinite(table).all()
        assert [lvl for lvl, _ in caps] == [0, 1, 2, 3]
    for i, cat in enumerate(all_categories("S3DIS")):
        table, meta, caps = make_scene(i, cat, seed=5, n_points=400)
        assert table.shape == (400, 8) and np.isfinite(table).all()
        assert (table[:, 7] == 2).mean() > 0.2  # walls and floor


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
    assert (cfg.n_artefacts + cfg.n_scenes) * 4 >= 9000
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
