"""Feature extraction: CLI error paths, output layout (read back through h2arn.features), caching,
atomic writes, the manifest check after an interrupted re-extraction, deterministic FPS and the
pretrain-on-the-dataset default."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from h2arn import extract as ex
from h2arn.features import FeatureError, load_feature_splits, read_tokens


def write_dataset(root: Path, n_points: int = 96, cols: int = 6, splits=("train", "test")) -> Path:
    """A tiny dataset in the official layout (no metadata.json: categories come from the names)."""
    rng = np.random.default_rng(0)
    for split in splits:
        caps = {}
        for i in range(4):
            kind = "sphere" if i % 2 == 0 else "plate"
            name = f"{kind}_{i + 10 * splits.index(split)}"
            p = rng.normal(size=(n_points, 3))
            p = p / np.linalg.norm(p, axis=1, keepdims=True) if kind == "sphere" else np.clip(p, -.6, .6) * [1, .1, 1]
            table = np.concatenate([p, rng.random((n_points, 3)), rng.random((n_points, 2))], 1)[:, :cols]
            folder = root / "Elephant" / f"pcd_normalize_{split}" / name
            folder.mkdir(parents=True)
            np.savetxt(folder / "model.txt", table, fmt="%.5f")
            caps[name] = [f"a {kind}", f"a small {kind} shape"]
        (root / "Elephant" / f"Elephant_caption_{split}.json").write_text(json.dumps({"result": caps}))
        scene = root / "S3DIS" / f"S3DIS_{split}_pcds"
        scene.mkdir(parents=True)
        np.savetxt(scene / f"Area_1_office_{1 + splits.index(split)}.txt", np.concatenate([rng.normal(size=(n_points + 20, 3)),
                                                                         rng.random((n_points + 20, 3))], 1))
        (root / "S3DIS" / f"S3DIS_{split}_captions.json").write_text(
            json.dumps({"result": {f"Area_1_office_{1 + splits.index(split)}": ["an office"]}}))
    return root


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    import transformers

    from h2arn.encoders.text import minilm_path

    path = tmp_path_factory.mktemp("bert") / "tiny_bert"
    cfg = transformers.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                  max_position_embeddings=80)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(path)
    transformers.AutoTokenizer.from_pretrained(minilm_path()).save_pretrained(path)
    return path


def run(root, out, tiny_bert, **kw):
    opts = dict(output_dir=out, txt_model_path=tiny_bert, pc_weights="random", num_tokens=8, batch_size=4,
                device="cpu", progress=False, splits=("train", "val", "test"))
    opts.update(kw)
    return ex.extract(root, kw.pop("pc_model", "PointNet"), "BERT", 64, **{k: v for k, v in opts.items()
                                                                            if k != "pc_model"})


def test_layout_links_and_meta(tmp_path, tiny_bert):
    root = write_dataset(tmp_path / "ds")
    summary = run(root, tmp_path / "feat", tiny_bert)
    assert sorted(summary["written"]) == ["Elephant/test", "Elephant/train", "S3DIS/test", "S3DIS/train"]
    split = load_feature_splits(ex.link_paths(tmp_path / "feat", "train"))
    longest = max(len(ex.load_text_encoder("BERT", tiny_bert).tokenizer(c)["input_ids"])
                  for c in ("a sphere", "a small sphere shape", "a plate", "a small plate shape", "an office"))
    assert split.txt.shape == (9, longest, 16) and split.txt_mask.dtype == torch.bool   # trimmed to the longest
    assert split.txt_mask.sum(1).tolist()[:2] == [4, 6]          # [CLS] a sphere [SEP] / [CLS] a small ... [SEP]
    rows = [r[0][1] for r in json.loads((tmp_path / "feat" / "Elephant_link_train.json").read_text())]
    assert rows == [0, 1, 2, 3, 0, 1, 2, 3]                       # each distinct caption stored once
    assert torch.equal(split.txt[0], split.txt[4])
    assert split.pc.shape == (5, 8, 512) and split.pc_mask.all()
    assert split.txt_to_pc.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4]
    assert split.meta[0]["caption"] == "a sphere" and split.meta[0]["category"] == "sphere"
    assert split.meta[-1]["shape"] == "Area_1_office_1" and split.meta[-1]["category"] == "office"
    assert {"shape", "subset", "category", "super_category", "level"} <= set(split.meta[0])


def test_second_run_does_no_work(tmp_path, tiny_bert, monkeypatch):
    root = write_dataset(tmp_path / "ds")
    out = tmp_path / "feat"
    run(root, out, tiny_bert)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    def boom(*a, **k):
        raise AssertionError("a cached run must not load any model")

    monkeypatch.setattr(ex, "load_text_encoder", boom)
    summary = run(root, out, tiny_bert)
    assert summary["written"] == [] and len(summary["skipped"]) == 4
    assert stamps == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    # a changed option or a changed input file invalidates exactly what it touches
    monkeypatch.undo()
    assert len(run(root, out, tiny_bert, num_tokens=4)["written"]) == 4
    caps = root / "S3DIS" / "S3DIS_test_captions.json"
    caps.write_text(json.dumps({"result": {"Area_1_office_2": ["a big office"]}}))
    assert run(root, out, tiny_bert, num_tokens=4)["written"] == ["S3DIS/test"]


def test_interrupted_write_leaves_no_partial_files(tmp_path, tiny_bert, monkeypatch):
    root = write_dataset(tmp_path / "ds")
    out = tmp_path / "feat"
    run(root, out, tiny_bert)
    before = read_tokens(out / "Elephant" / "train" / "pc_features_PointNet.pt")
    import h2arn.features as F

    real_save, calls = torch.save, {"n": 0}

    def crash_midway(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # third file of the first split: write half a file, then die
            Path(f).write_bytes(b"PK\x03\x04 half")
            raise KeyboardInterrupt("power cut")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(F.torch, "save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        run(root, out, tiny_bert, num_tokens=4, pc_weights="random")
    monkeypatch.undo()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    after = read_tokens(out / "Elephant" / "train" / "pc_features_PointNet.pt")
    assert all(torch.equal(b, a) for b, a in zip(before, after))  # the old complete file is intact
    # the interrupted split is not recorded as done, so the next run redoes it
    assert "Elephant/train" in run(root, out, tiny_bert, num_tokens=4)["written"]


def test_crash_during_re_extraction_is_refused_at_load(tmp_path, tiny_bert, monkeypatch):
    """Issue 13 item 3: new text features beside old links must never be accepted by training."""
    from h2arn import train as T

    root = write_dataset(tmp_path / "ds")
    out = tmp_path / "feat"
    run(root, out, tiny_bert)
    link = out / "Elephant_link_train.json"
    old_links = link.read_bytes()
    load_feature_splits([link])                                    # complete: loads
    caps = root / "Elephant" / "Elephant_caption_train.json"       # new captions (in another order)
    data = json.loads(caps.read_text())
    data["result"] = {k: list(reversed(v)) + ["a new caption"] for k, v in reversed(list(data["result"].items()))}
    caps.write_text(json.dumps(data))
    import h2arn.features as F

    real_save = F.atomic_save

    def crash_after_text(obj, path, *a, **k):
        real_save(obj, path, *a, **k)
        if Path(path).name.startswith("txt_masks_"):               # new text features and masks written ...
            raise KeyboardInterrupt("killed")                      # ... then the process dies

    monkeypatch.setattr(F, "atomic_save", crash_after_text)
    with pytest.raises(KeyboardInterrupt):
        run(root, out, tiny_bert, splits=("train",))
    monkeypatch.undo()
    assert link.read_bytes() == old_links                          # the old links are still there
    with pytest.raises(FeatureError, match="did not finish"):
        load_feature_splits([link])
    rc = T.main(["--train_link", str(link), "--val_link", str(out / "Elephant_link_test.json"), "--num_epochs", "1",
                 "--d_model", "8", "--nhead", "2", "--num_layers", "1", "--run_dir", str(tmp_path / "r"),
                 "--device", "cpu", "--quiet"])
    assert rc == 2                                                 # training refuses it, with one line
    # a manifest that says complete but files changed afterwards (e.g. copied over by hand) is refused too
    assert "Elephant/train" in run(root, out, tiny_bert, splits=("train",))["written"]
    split = load_feature_splits([link])                            # the finished re-extraction loads
    assert split.num_texts == 12 and "a new caption" in {m["caption"] for m in split.meta}
    txt_file = out / "Elephant" / "train" / "txt_features_BERT.pt"
    feats, mask = read_tokens(txt_file)
    F.atomic_save(F.pack_tokens(feats.flip(0), mask.flip(0)), txt_file)
    with pytest.raises(FeatureError, match="no longer match"):
        load_feature_splits([link])


def test_fps_downsampling_is_deterministic(tmp_path, tiny_bert):
    root = write_dataset(tmp_path / "ds", n_points=200)
    a = run(root, tmp_path / "a", tiny_bert, splits=("train",))["output_dir"]
    b = run(root, tmp_path / "b", tiny_bert, splits=("train",))["output_dir"]
    fa = read_tokens(a / "Elephant" / "train" / "pc_features_PointNet.pt")
    fb = read_tokens(b / "Elephant" / "train" / "pc_features_PointNet.pt")
    assert all(torch.equal(x, y) for x, y in zip(fa, fb))


def test_pretrained_default_and_subset_folder(tmp_path, tiny_bert, monkeypatch):
    monkeypatch.setenv("H2ARN_ROOT", str(tmp_path / "repo"))  # build/encoders goes to tmp
    root = write_dataset(tmp_path / "ds")
    summary = ex.extract(root / "Elephant", "PointNet", "BERT", 64, output_dir=tmp_path / "feat",
                         txt_model_path=tiny_bert, pc_weights=None, num_tokens=8, device="cpu", progress=False,
                         pretrain_config=dict(emb_dims=32), pretrain_training=dict(epochs=2, batch_size=4))
    assert sorted(summary["written"]) == ["Elephant/test", "Elephant/train"]  # only the subset asked for
    ckpt = Path(summary["pc_weights"])
    assert ckpt.parent == tmp_path / "repo" / "build" / "encoders" and ckpt.is_file()


def test_cli_missing_folder(tmp_path, capsys):
    assert ex.main(["--base_data_dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nope") in err and "Fix" in err and err.count("\n") == 1


def test_cli_wrong_channel_count(tmp_path, capsys):
    root = write_dataset(tmp_path / "ds", cols=4)
    assert ex.main(["--base_data_dir", str(root), "--pc_weights", "random", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "model.txt" in err and "4 columns" in err


def test_cli_unknown_split_and_bad_weights(tmp_path, capsys):
    root = write_dataset(tmp_path / "ds")
    assert ex.main(["--base_data_dir", str(root), "--splits", "dev", "--pc_weights", "random"]) == 2
    assert "none of the splits ['dev']" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    torch.save({"w": torch.zeros(1)}, bad)
    assert ex.main(["--base_data_dir", str(root), "--pc_weights", str(bad), "--output_dir", str(tmp_path / "f")]) == 2
    assert "unrecognised checkpoint layout" in capsys.readouterr().err


def test_link_paths_error(tmp_path):
    with pytest.raises(Exception, match="no link file"):
        ex.link_paths(tmp_path, "train")


def test_folding_batchnorm_keeps_the_tokens():
    import copy

    from h2arn.encoders import build_point_encoder

    torch.manual_seed(0)
    enc = build_point_encoder("PointNet", channels="xyz", emb_dims=32, num_tokens=8).eval()
    for m in enc.modules():                       # non-trivial statistics, as after pretraining
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    folded = ex.fold_batchnorm_(copy.deepcopy(enc))
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in folded.modules())
    x = torch.rand(3, 64, 6)
    with torch.no_grad():
        (a, ma), (b, mb) = enc(x), folded(x)
    assert torch.equal(ma, mb) and torch.allclose(a, b, atol=1e-5)
