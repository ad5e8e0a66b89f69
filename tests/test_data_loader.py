"""T3DR-HIT v2 reader on a tiny fixture in the official layout (train/test only, 6 columns, rgb 0..255)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from h2arn.data import (DatasetError, available_splits, available_subsets, find_t3drhit, load_metadata,
                        load_split, read_points)
from h2arn.data.t3drhit import T3DRHIT_URL


def _write_cloud(path: Path, n: int, rng, rgb255: bool = False, cols: int = 6):
    path.parent.mkdir(parents=True, exist_ok=True)
    xyz = rng.uniform(-1, 1, size=(n, 3))
    rgb = rng.uniform(0, 255 if rgb255 else 1, size=(n, 3))
    arr = np.concatenate([xyz, rgb, rng.uniform(size=(n, cols - 6))], axis=1)
    np.savetxt(path, arr, fmt="%.6f")


def make_fixture(root: Path) -> Path:
    """``root/data/{Elephant,S3DIS}`` with 3 train + 2 test shapes each, as the official scripts expect."""
    rng = np.random.default_rng(0)
    data = root / "data"
    for split, names in (("train", ["ding_a", "vase_b", "bowl_c"]), ("test", ["cup_d", "jar_e"])):
        caps = {n: [f"a {n.split('_')[0]}.", f"an old bronze {n.split('_')[0]} with patterns"] for n in names}
        (data / "Elephant").mkdir(parents=True, exist_ok=True)
        (data / "Elephant" / f"Elephant_caption_{split}.json").write_text(json.dumps({"result": caps}))
        for n in names:
            _write_cloud(data / "Elephant" / f"pcd_normalize_{split}" / n / "model.txt", 50, rng)
    for split, names in (("train", ["Area_1_office_1", "Area_2_hallway_3", "Area_4_WC_1"]),
                         ("test", ["Area_6_office_2", "Area_6_lobby_1"])):
        caps = {n: ["a room.", "an office with desks", "chairs and a table"] for n in names}
        (data / "S3DIS").mkdir(parents=True, exist_ok=True)
        (data / "S3DIS" / f"S3DIS_{split}_captions.json").write_text(json.dumps({"result": caps}))
        for n in names:
            _write_cloud(data / "S3DIS" / f"S3DIS_{split}_pcds" / f"{n}.txt", 80, rng, rgb255=True)
    return data


@pytest.fixture()
def fixture_root(tmp_path) -> Path:
    return make_fixture(tmp_path)


def test_reads_official_layout(fixture_root):
    root = find_t3drhit(fixture_root.parent)  # finds root/data
    assert root == fixture_root
    assert available_subsets(root) == ["Elephant", "S3DIS"]
    assert available_splits(root, "Elephant") == ["train", "test"]
    assert load_metadata(root) == {}
    recs = load_split(root, "Elephant", "train")
    assert [r.name for r in recs] == ["ding_a", "vase_b", "bowl_c"]
    assert recs[0].points.shape == (50, 6) and recs[0].points.dtype == np.float32 and recs[0].extra is None
    assert recs[0].captions[1].startswith("an old bronze")
    scenes = load_split(root, "S3DIS", "test")
    assert len(scenes) == 2 and scenes[0].points[:, 3:].max() <= 1.0  # 0..255 colours rescaled
    assert scenes[0].meta["rgb_scale"] == 255
    assert load_split(root, "S3DIS", "train", limit=1)[0].name == "Area_1_office_1"


def test_missing_dataset_gives_one_clear_message(tmp_path):
    with pytest.raises(DatasetError) as info:
        find_t3drhit(tmp_path)
    msg = str(info.value)
    assert T3DRHIT_URL in msg and "bstd" in msg and str(tmp_path / "Elephant") in msg


def test_val_split_absent_in_real_data(fixture_root):
    with pytest.raises(DatasetError, match="no val split"):
        load_split(fixture_root, "Elephant", "val")


def test_extra_columns_are_kept(tmp_path):
    rng = np.random.default_rng(1)
    p = tmp_path / "c.txt"
    _write_cloud(p, 10, rng, cols=8)
    arr = read_points(p)
    assert arr.shape == (10, 8)


@pytest.mark.parametrize("corruption, pattern", [
    ("truncate", "line .* has .* columns"),
    ("missing_shape", "point file .* is missing"),
    ("wrong_columns", "expected at least 6"),
    ("nan", "NaN"),
    ("bad_json", "not valid JSON"),
    ("not_result", "'result'"),
    ("empty_caption", "non-empty list"),
    ("empty_file", "is empty"),
    ("text_value", "not a number"),
])
def test_corrupt_data_fails_naming_the_file(fixture_root, corruption, pattern):
    cloud = fixture_root / "Elephant" / "pcd_normalize_train" / "vase_b" / "model.txt"
    captions = fixture_root / "Elephant" / "Elephant_caption_train.json"
    named = cloud
    if corruption == "truncate":
        text = cloud.read_text()
        lines = text.splitlines()
        cut = len("\n".join(lines[:20])) + 1 + len(" ".join(lines[20].split()[:3]))
        cloud.write_text(text[:cut])
    elif corruption == "missing_shape":
        data = json.loads(captions.read_text())
        data["result"]["ghost_z"] = ["a ghost."]
        captions.write_text(json.dumps(data))
        named = fixture_root / "Elephant" / "pcd_normalize_train" / "ghost_z" / "model.txt"
    elif corruption == "wrong_columns":
        np.savetxt(cloud, np.ones((5, 3)), fmt="%.3f")
    elif corruption == "nan":
        lines = cloud.read_text().splitlines()
        lines[7] = "0.1 nan 0.2 0.5 0.5 0.5"
        cloud.write_text("\n".join(lines))
    elif corruption == "bad_json":
        captions.write_text(captions.read_text()[:-5])
        named = captions
    elif corruption == "not_result":
        captions.write_text(json.dumps({"captions": {}}))
        named = captions
    elif corruption == "empty_caption":
        captions.write_text(json.dumps({"result": {"vase_b": []}}))
        named = captions
    elif corruption == "empty_file":
        cloud.write_text("")
    elif corruption == "text_value":
        lines = cloud.read_text().splitlines()
        lines[3] = "0.1 abc 0.2 0.5 0.5 0.5"
        cloud.write_text("\n".join(lines))
    with pytest.raises(DatasetError, match=pattern) as info:
        load_split(fixture_root, "Elephant", "train")
    assert str(named) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_generated_metadata_mismatch_is_detected(tmp_path):
    from h2arn.data import generate

    root = generate("ci", 0, tmp_path / "g", progress=False)
    meta = json.loads((root / "metadata.json").read_text())
    name = meta["splits"]["Elephant"]["train"][0]
    meta["shapes"][name]["caption_levels"] = [0]
    (root / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="caption levels"):
        load_split(root, "Elephant", "train")


def test_cli_generate_and_info(tmp_path, capsys):
    from h2arn.data.__main__ import main

    out = tmp_path / "cli"
    assert main(["generate", "--profile", "ci", "--out", str(out)]) == 0
    assert "2592 text-3D pairs" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    assert "Elephant/train" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "nothing")]) == 2
    assert "pan.baidu.com" in capsys.readouterr().err
