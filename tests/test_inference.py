"""Inference CLI and strict checkpoint loading: the official code's silent failure modes are errors here."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _fake_features import D_TXT, link, make_fake_features  # noqa: E402

from h2arn import inference as I  # noqa: E402
from h2arn import train as T  # noqa: E402
from h2arn.checkpoint import CheckpointError, load_model_file  # noqa: E402
from h2arn.evaluate import retrieval_metrics  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    feats = make_fake_features(tmp_path_factory.mktemp("feats"))
    run_dir = tmp_path_factory.mktemp("run")
    cfg = T.TrainConfig(train_link=[str(link(feats, "train"))], val_link=[str(link(feats, "val"))], d_model=16,
                        nhead=2, num_layers=1, batch_size=16, num_epochs=2, device="cpu", run_dir=str(run_dir),
                        num_threads=1)
    res = T.train(cfg, quiet=True)
    return feats, res["best_model_path"]


def _cli(*args) -> list[str]:
    return [str(a) for a in args]


def test_cli_prints_and_writes_all_metrics(run, tmp_path, capsys):
    feats, model_path = run
    out_json = tmp_path / "test.json"
    rc = I.main(_cli("--best_model_path", model_path, "--test_link_path", link(feats, "test"), "--device", "cpu",
                     "--output_json", out_json))
    out = capsys.readouterr().out
    assert rc == 0
    for label in ("text -> 3D", "3D -> text", "R@1", "R@5", "R@10", "Rsum", "mean rank", "MRR"):
        assert label in out
    m = json.loads(out_json.read_text())
    assert m["num_texts"] == 20 and m["num_clouds"] == 10
    assert m["rsum"] == pytest.approx(sum(m[f"{d}_R@{k}"] for d in ("t2p", "p2t") for k in (1, 5, 10)))


def test_metrics_equal_a_direct_evaluation(run):
    """The CLI path (strict load + split reading) reproduces metrics computed by hand from the model."""
    feats, model_path = run
    from h2arn.features import load_links
    model, _ = load_model_file(model_path)
    split = load_links(link(feats, "test"))
    with torch.no_grad():
        sim = model.similarity(model.encode_text(split.txt, split.txt_mask), model.encode_cloud(split.pc, split.pc_mask))
    direct = retrieval_metrics(sim, split.txt_to_pc)
    got = I.evaluate_checkpoint(model_path, [link(feats, "test")], device="cpu")
    for k, v in direct.items():
        assert got[k] == pytest.approx(float(v)), k


def test_explicit_feature_paths_override_the_link_file(run, tmp_path):
    """Official flags: --test_txt_path/--test_cld_path name the tensors the link indices refer to."""
    feats, model_path = run
    base = I.evaluate_checkpoint(model_path, [link(feats, "test")], device="cpu")
    split_dir = feats / "Elephant" / "test"
    same = I.evaluate_checkpoint(model_path, [link(feats, "test")], device="cpu",
                                 test_txt_path=str(split_dir / "txt_features_FAKE.pt"),
                                 test_cld_path=str(split_dir / "pc_features_FAKEPC.pt"))
    assert same["rsum"] == base["rsum"]
    # point the clouds at the *validation* tensor (also 10 clouds): different data, different numbers
    other = I.evaluate_checkpoint(model_path, [link(feats, "test")], device="cpu",
                                  test_cld_path=str(feats / "Elephant" / "val" / "pc_features_FAKEPC.pt"))
    assert other["t2p_mrr"] != base["t2p_mrr"]


def test_missing_checkpoint_is_an_error_not_an_untrained_model(run, tmp_path, capsys):
    feats, _ = run
    rc = I.main(_cli("--best_model_path", tmp_path / "bestEle.pth", "--test_link_path", link(feats, "test"),
                     "--device", "cpu"))
    err = capsys.readouterr().err
    assert rc == 2 and "bestEle.pth" in err and "not found" in err and "untrained" in err


def test_corrupt_and_foreign_checkpoints(run, tmp_path):
    feats, _ = run
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="cannot be read"):
        I.evaluate_checkpoint(bad, [link(feats, "test")], device="cpu")
    bare = tmp_path / "bare.pth"
    torch.save({"txt_encoder.weight": torch.zeros(2)}, bare)       # a bare state dict, like the official files
    with pytest.raises(CheckpointError, match="not an h2arn"):
        I.evaluate_checkpoint(bare, [link(feats, "test")], device="cpu")


def test_flags_that_disagree_with_the_checkpoint(run, capsys):
    feats, model_path = run
    rc = I.main(_cli("--best_model_path", model_path, "--test_link_path", link(feats, "test"), "--d_model", "512",
                     "--nhead", "64", "--device", "cpu"))
    err = capsys.readouterr().err
    assert rc == 2 and "d_model: checkpoint 16 vs requested 512" in err and "nhead" in err


def test_weights_that_do_not_fit_the_config(run, tmp_path):
    feats, model_path = run
    payload = torch.load(model_path, weights_only=True)
    payload["model_config"]["d_model"] = 32
    payload["model_config"]["nhead"] = 2
    tampered = tmp_path / "tampered.pth"
    torch.save(payload, tampered)
    with pytest.raises(CheckpointError, match="weights do not fit"):
        I.evaluate_checkpoint(tampered, [link(feats, "test")], device="cpu")


def test_features_that_do_not_fit_the_model(run, tmp_path, capsys):
    _, model_path = run
    import h2arn.features as F
    other = tmp_path / "other"
    n = 4
    F.write_split(other, "S3DIS", "test", txt=torch.randn(n, 3, 9), txt_mask=torch.ones(n, 3, dtype=torch.bool),
                  pc=torch.randn(n, 5, 10), pc_mask=torch.ones(n, 5, dtype=torch.bool),
                  links=[(i, i) for i in range(n)], txt_model="X", pc_model="Y")
    rc = I.main(_cli("--best_model_path", model_path, "--test_link_path", other / "S3DIS_link_test.json",
                     "--device", "cpu"))
    err = capsys.readouterr().err
    assert rc == 2 and "S3DIS_link_test.json" in err and "width 9" in err and f"d_txt={D_TXT}" in err


def test_missing_link_and_feature_files(run, tmp_path, capsys):
    feats, model_path = run
    rc = I.main(_cli("--best_model_path", model_path, "--test_link_path", tmp_path / "none_link_test.json",
                     "--device", "cpu"))
    assert rc == 2 and "none_link_test.json" in capsys.readouterr().err
    rc = I.main(_cli("--best_model_path", model_path, "--test_link_path", link(feats, "test"), "--test_txt_path",
                     tmp_path / "gone.pt", "--device", "cpu"))
    err = capsys.readouterr().err
    assert rc == 2 and "gone.pt" in err and "--test_txt_path" in err


def test_nan_in_test_features(run, tmp_path, capsys):
    _, model_path = run
    root = make_fake_features(tmp_path / "nan", n_clouds={"test": 4})
    f = root / "Elephant" / "test" / "txt_features_FAKE.pt"
    t = torch.load(f, weights_only=True)
    t[0, 0, 0] = float("inf")
    torch.save(t, f)
    rc = I.main(_cli("--best_model_path", model_path, "--test_link_path", link(root, "test"), "--device", "cpu"))
    err = capsys.readouterr().err
    assert rc == 2 and "txt_features_FAKE.pt" in err and "NaN/inf" in err


def test_training_checkpoint_is_also_accepted(run):
    feats, model_path = run
    ckpt = Path(model_path).parent / "checkpoint.pth"
    m = I.evaluate_checkpoint(ckpt, [link(feats, "test")], device="cpu")
    assert m["epoch"] == 2
