"""Training: schedule, batching, metrics.json, model selection on val, exact resume, checkpoint files, CLI errors."""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _fake_features import D_PCD, D_TXT, link, make_fake_features  # noqa: E402

from h2arn import evaluate as V  # noqa: E402
from h2arn import runs as R  # noqa: E402
from h2arn import train as T  # noqa: E402
from h2arn.features import trim_padding  # noqa: E402
from h2arn.checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_model_file, load_payload  # noqa: E402
from h2arn.features import FeatureError  # noqa: E402

TINY = dict(d_model=16, nhead=2, num_layers=1, batch_size=16, device="cpu", dropout=0.1, num_threads=1)


@pytest.fixture(scope="module")
def feats(tmp_path_factory) -> Path:
    return make_fake_features(tmp_path_factory.mktemp("feats"))


def _cfg(feats: Path, run_dir: Path, **kw) -> T.TrainConfig:
    base = dict(TINY, train_link=[str(link(feats, "train"))], val_link=[str(link(feats, "val"))],
                num_epochs=3, run_dir=str(run_dir), seed=0)
    base.update(kw)
    return T.TrainConfig(**base)


@pytest.fixture(scope="module")
def trained(feats, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    return T.train(_cfg(feats, run_dir, num_epochs=4), quiet=True)


# --------------------------------------------------------------------------- schedule and batches

def test_schedule_warms_up_then_decays_to_zero():
    s = T.WarmupLinearDecay(total_steps=100, warmup_steps=10)
    assert s(0) == 0.0 and s(5) == pytest.approx(0.5) and s(10) == pytest.approx(1.0)
    assert s(55) == pytest.approx(0.5) and s(100) == 0.0 and s(120) == 0.0
    vals = [s(i) for i in range(101)]
    assert max(range(101), key=vals.__getitem__) == 10


def test_batches_cover_every_link_once_and_depend_on_seed_and_epoch():
    b = T.LinkBatcher(50, 16, seed=3)
    batches = b.epoch(1)
    assert len(batches) == len(b) == 4 and [len(x) for x in batches] == [16, 16, 16, 2]  # no drop_last
    assert sorted(torch.cat(batches).tolist()) == list(range(50))
    assert torch.equal(torch.cat(b.epoch(1)), torch.cat(batches))                     # reproducible
    assert not torch.equal(torch.cat(b.epoch(2)), torch.cat(batches))                 # reshuffled per epoch
    assert not torch.equal(torch.cat(T.LinkBatcher(50, 16, seed=4).epoch(1)), torch.cat(batches))


def test_config_round_trips_through_json():
    cfg = T.TrainConfig(train_link=["a.json"], d_model=32, fixed_curvature=True)
    again = T.TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


# --------------------------------------------------------------------------- a real (tiny) run

def test_training_learns_and_writes_metrics_json(trained):
    m = json.loads(Path(trained["metrics_path"]).read_text())
    assert m["complete"] is True and m["format"] == "h2arn-metrics"
    assert [e["epoch"] for e in m["epochs"]] == [1, 2, 3, 4]
    first, last = m["epochs"][0], m["epochs"][-1]
    for key in ("loss", "contrastive", "contrastive_t2p", "contrastive_p2t", "entailment", "entail_active_frac"):
        assert key in last["loss"] and math.isfinite(last["loss"][key])
    assert last["loss"]["loss"] < first["loss"]["loss"]                  # it learns on a learnable task
    for key in ("t2p_R@1", "t2p_R@5", "p2t_R@10", "rsum", "t2p_mrr", "p2t_mean_rank"):
        assert key in last["val"]
    assert {"curvature", "temp_txt", "temp_pcd", "alpha_txt", "alpha_pcd"} <= set(last["scalars"])
    assert last["wall_s"] >= first["wall_s"] > 0 and last["pairs_per_s"] > 0
    assert len(m["steps"]) == 4 * 3 and m["steps"][-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert m["selection"]["split"] == "val" and "never" in m["selection"]["note"]
    assert m["data"]["val_links"] == 20 and m["model_config"]["d_txt"] == D_TXT


def test_model_is_selected_on_validation_rsum(trained):
    m = json.loads(Path(trained["metrics_path"]).read_text())
    rsums = [e["val"]["rsum"] for e in m["epochs"]]
    best_epoch = 1 + max(range(len(rsums)), key=lambda i: (rsums[i], -i))   # first epoch reaching the max
    assert m["best"]["epoch"] == best_epoch == trained["best"]["epoch"]
    model, payload = load_model_file(trained["best_model_path"])
    assert payload["epoch"] == best_epoch and payload["val_metrics"]["rsum"] == max(rsums)
    assert not model.training


def test_selection_follows_val_not_the_last_epoch(feats, tmp_path, monkeypatch):
    """Make validation Rsum peak at epoch 2: the saved model must be epoch 2's weights."""
    scripted = iter([10.0, 50.0, 20.0])
    real = T.evaluate_split
    snap = {}

    def fake_eval(model, split, device, batch_size=512, amp=False):
        out = real(model, split, device, batch_size, amp)
        out["rsum"] = next(scripted)
        snap[out["rsum"]] = {k: v.clone() for k, v in model.state_dict().items()}
        return out

    monkeypatch.setattr(T, "evaluate_split", fake_eval)
    res = T.train(_cfg(feats, tmp_path), quiet=True)
    assert res["best"]["epoch"] == 2
    model, _ = load_model_file(res["best_model_path"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, snap[50.0][k]), k


def test_resume_after_interruption_gives_identical_results(feats, tmp_path):
    full = T.train(_cfg(feats, tmp_path / "full", num_epochs=4), quiet=True)
    part = _cfg(feats, tmp_path / "part", num_epochs=4)
    first = T.train(part, stop_after_epoch=2, quiet=True)
    assert json.loads(Path(first["metrics_path"]).read_text())["complete"] is False
    resumed = T.train(_cfg(feats, tmp_path / "part", num_epochs=4, resume=True), quiet=True)
    a = json.loads(Path(full["metrics_path"]).read_text())
    b = json.loads(Path(resumed["metrics_path"]).read_text())
    assert [e["loss"] for e in a["epochs"]] == [e["loss"] for e in b["epochs"]]
    assert [e["val"] for e in a["epochs"]] == [e["val"] for e in b["epochs"]]
    assert a["best"] == b["best"]
    wa = load_payload(full["checkpoint_path"])["state_dict"]
    wb = load_payload(resumed["checkpoint_path"])["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_refuses_changed_settings(feats, tmp_path):
    T.train(_cfg(feats, tmp_path, num_epochs=2), stop_after_epoch=1, quiet=True)
    with pytest.raises(CheckpointError, match="learning_rate"):
        T.train(_cfg(feats, tmp_path, num_epochs=2, learning_rate=1e-3, resume=True), quiet=True)


def test_checkpoint_contains_everything_to_resume(trained):
    ck = load_payload(trained["checkpoint_path"], expect=CHECKPOINT_FORMAT)
    assert {"optimizer", "scheduler", "rng", "epoch", "best", "train_config", "model_config", "history"} <= set(ck)
    assert set(ck["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert ck["epoch"] == 4 and ck["scheduler"]["last_epoch"] == 12


def test_checkpoint_writes_are_atomic(feats, tmp_path, monkeypatch):
    """A crash while writing the checkpoint leaves the previous complete file and no temp file."""
    cfg = _cfg(feats, tmp_path, num_epochs=3)
    T.train(cfg, stop_after_epoch=1, quiet=True)
    ckpt = tmp_path / "checkpoint.pth"
    before = ckpt.read_bytes()
    real_save = torch.save

    def crashing_save(obj, f, *a, **k):
        if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
            with open(f, "wb") as fh:
                fh.write(b"half a file")
            raise KeyboardInterrupt("power cut")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        T.train(_cfg(feats, tmp_path, num_epochs=3, resume=True), quiet=True)
    monkeypatch.setattr(torch, "save", real_save)
    assert ckpt.read_bytes() == before
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert load_payload(ckpt, expect=CHECKPOINT_FORMAT)["epoch"] == 1


def test_fixed_curvature_and_euclidean_variants_train(feats, tmp_path):
    fixed = T.train(_cfg(feats, tmp_path / "fixed", num_epochs=1, fixed_curvature=True), quiet=True)
    assert fixed["history"][-1]["scalars"]["curvature"] == pytest.approx(1.0)
    eu = T.train(_cfg(feats, tmp_path / "eu", num_epochs=1, geometry="euclidean", aggregation="mean"), quiet=True)
    assert eu["history"][-1]["loss"]["entailment_defined"] == 0.0


# --------------------------------------------------------------------------- errors

def test_feature_width_mismatch_is_one_clear_error(feats, tmp_path):
    with pytest.raises(FeatureError) as e:
        T.train(_cfg(feats, tmp_path, d_txt=512), quiet=True)
    msg = str(e.value)
    assert "Elephant_link_train.json" in msg and f"--d_txt {D_TXT}" in msg and "512" in msg


def test_missing_val_split_is_an_error_not_test_selection(feats, tmp_path):
    import shutil
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(link(feats, "train"), alone / "Elephant_link_train.json")
    (alone / "Elephant").symlink_to(feats / "Elephant")
    with pytest.raises(FeatureError, match="--val_link"):
        T.train(T.TrainConfig(**TINY, train_link=[str(alone / "Elephant_link_train.json")], num_epochs=1,
                              run_dir=str(tmp_path / "r")), quiet=True)


def test_cli_missing_link_file(tmp_path, capsys):
    rc = T.main(["--train_link", str(tmp_path / "nope_link_train.json"), "--val_link", str(tmp_path / "v.json"),
                 "--run_dir", str(tmp_path), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "nope_link_train.json" in err and "not found" in err and "Fix" in err


def test_cli_wrong_dims(feats, tmp_path, capsys):
    rc = T.main(["--train_link", str(link(feats, "train")), "--d_pcd", "7", "--d_model", "16", "--nhead", "2",
                 "--num_layers", "1", "--num_epochs", "1", "--run_dir", str(tmp_path), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and f"--d_pcd {D_PCD}" in err and "Elephant_link_train.json" in err


def test_cli_nan_features(tmp_path, capsys):
    root = make_fake_features(tmp_path / "nan", n_clouds={"train": 6, "val": 4})
    pc_file = root / "Elephant" / "train" / "pc_features_FAKEPC.pt"
    pc = torch.load(pc_file, weights_only=True)
    pc[2, 1, 3] = float("nan")
    torch.save(pc, pc_file)
    rc = T.main(["--train_link", str(link(root, "train")), "--d_model", "16", "--nhead", "2", "--num_layers", "1",
                 "--num_epochs", "1", "--run_dir", str(tmp_path / "r"), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "pc_features_FAKEPC.pt" in err and "NaN" in err


def test_cli_cuda_on_cpu_machine(feats, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc = T.main(["--train_link", str(link(feats, "train")), "--device", "cuda", "--run_dir", str(tmp_path), "--quiet"])
    assert rc == 2 and "--device cpu" in capsys.readouterr().err


def test_cli_trains_and_prints_summary(feats, tmp_path, capsys):
    rc = T.main(["--train_link", str(link(feats, "train")), "--d_model", "16", "--nhead", "2", "--num_layers", "1",
                 "--batch_size", "32", "--num_epochs", "1", "--save_model_path", str(tmp_path / "m.pth"),
                 "--device", "cpu", "--quiet"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and out["best_epoch"] == 1 and Path(out["best_model_path"]) == tmp_path / "m.pth"
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "checkpoint.pth").is_file()


# --------------------------------------------------------------------------- course helpers (h2arn.course.experiments)

@pytest.fixture()
def course_env(feats, tmp_path, monkeypatch):
    """Point the course helpers at the fake features and a temporary build folder, with tiny sizes."""
    from h2arn.course import experiments as E
    monkeypatch.setenv("H2ARN_ROOT", str(tmp_path))
    monkeypatch.setattr(E, "default_links", lambda cfg, split: [link(feats, split)])
    monkeypatch.setitem(E.TRAIN_PROFILES, "ci", dict(TINY, num_epochs=2, learning_rate=2e-3))
    return E


def test_ensure_trained_caches_and_retrains_on_config_change(course_env, tmp_path, monkeypatch):
    E = course_env
    calls = []
    real_train = E.train
    monkeypatch.setattr(E, "train", lambda cfg, **kw: calls.append(cfg) or real_train(cfg, **kw))
    run = E.ensure_trained("ci", "h2arn", device="cpu")
    assert run == tmp_path / "build" / "runs" / "ci" / "h2arn-s0" and (run / "best_model.pth").is_file()
    assert E.ensure_trained("ci", "h2arn", device="cpu") == run and len(calls) == 1       # cached
    monkeypatch.setitem(E.TRAIN_PROFILES, "ci", dict(TINY, num_epochs=3, learning_rate=2e-3))
    E.ensure_trained("ci", "h2arn", device="cpu")
    assert len(calls) == 2 and len(R.read_metrics(run)["epochs"]) == 3                   # stale -> retrained


def test_ablation_table_evaluates_on_test_and_compares(course_env):
    E = course_env
    rows = E.ablation_table("ci", ("h2arn", "euclidean"), seeds=(0, 1), device="cpu")
    assert [r["variant"] for r in rows] == ["h2arn", "euclidean"]
    h, eu = rows
    assert h["rsum_delta"] == 0 and eu["rsum_delta"] == pytest.approx(eu["rsum"] - h["rsum"])
    assert len(h["rsum_per_seed"]) == 2 and h["rsum"] == pytest.approx(sum(h["rsum_per_seed"]) / 2)
    assert h["paper"]["rsum"] == 238.5 and eu["paper"]["rsum"] == 196.3
    cached = json.loads((E.run_dir_for("ci", "h2arn", 0) / "test_metrics.json").read_text())
    assert cached["split"] == "test" and cached["rsum"] == h["rsum_per_seed"][0]
    table = E.format_ablation_table(rows)
    assert table.count("\n") == 3 and "238.5" in table and "± " in table


def test_hierarchy_check_and_gallery(course_env):
    E = course_env
    run = E.ensure_trained("ci", "h2arn", device="cpu")
    h = V.hierarchy_check(run, device="cpu")
    assert h["applicable"] and set(h["per_level_mean_dist"]) == {0, 1} and -1 <= h["spearman_rho"] <= 1
    assert not V.hierarchy_check(E.ensure_trained("ci", "euclidean", device="cpu"), device="cpu")["applicable"]
    hits = V.top_k_clouds(run, [0, 5], k=3, device="cpu")
    assert [len(x["top"]) for x in hits] == [3, 3] and hits[0]["target"] == 0
    assert all(x["correct"] == [j == x["target"] for j in x["top"]] for x in hits)
    assert hits[1]["top_meta"][0]["shape"].startswith("obj")


def test_trimming_trailing_padding_does_not_change_embeddings():
    from h2arn.model import H2ARN, ModelConfig
    torch.manual_seed(0)
    model = H2ARN(ModelConfig(d_txt=12, d_pcd=10, d_model=16, nhead=2, num_layers=2)).eval()
    tok = torch.randn(5, 9, 12)
    mask = torch.zeros(5, 9, dtype=torch.bool)
    for i, n in enumerate([3, 5, 1, 4, 2]):
        mask[i, :n] = True
    t2, m2 = trim_padding(tok, mask)
    assert t2.shape == (5, 5, 12) and m2.all(dim=0).sum() == 1
    with torch.no_grad():
        assert torch.allclose(model.encode_text(tok, mask), model.encode_text(t2, m2), atol=1e-5)
    full = torch.ones(2, 4, dtype=torch.bool)
    assert trim_padding(tok[:2, :4], full)[0].shape == (2, 4, 12)


def test_ensure_trained_retrains_when_features_are_re_extracted(course_env, feats, monkeypatch):
    E = course_env
    run = E.ensure_trained("ci", "h2arn", device="cpu")
    first = R.read_metrics(run)["data"]["fingerprint"]
    assert any(k.endswith("pc_features_FAKEPC.pt") for k in first)
    pc_file = feats / "Elephant" / "train" / "pc_features_FAKEPC.pt"
    calls = []
    real_train = E.train
    monkeypatch.setattr(E, "train", lambda cfg, **kw: calls.append(cfg) or real_train(cfg, **kw))
    torch.save(torch.load(pc_file, weights_only=True), pc_file)       # re-written, same content: reused
    E.ensure_trained("ci", "h2arn", device="cpu")
    assert calls == []
    pc = torch.load(pc_file, weights_only=True)
    torch.save(pc + 0.01, pc_file)                                    # re-extracted, new content: retrained
    E.ensure_trained("ci", "h2arn", device="cpu")
    assert len(calls) == 1 and R.read_metrics(run)["data"]["fingerprint"] != first
    torch.save(pc, pc_file)
