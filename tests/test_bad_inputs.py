"""The reliability catalogue as a table: every bad input gets ONE clear line, exit code 2, and loses nothing.

Each row of :data:`CATALOGUE` is one bad input (issue 13, ``../shared/research/reliability_catalogue.md``):
the command-line tool, its arguments, the exit code, and the words the error line must contain (and
must not: a message naming the wrong cause is a defect too). Rows run the CLIs' ``main()`` in-process
(the same code path as ``python -m ...``: ``h2arn.cli.run_cli`` does the mapping) on tiny fake
features, so the whole table takes seconds; two rows run as real subprocesses to check the
``python -m`` entry points print no traceback.

To add a case: append a :class:`Case`. ``setup`` prepares files (and may patch, via ``monkeypatch``,
a fault that cannot be produced for real on this machine, such as a full disk), ``check`` asserts
what must survive (e.g. the user's files).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _fake_features import D_PCD, D_TXT, link, make_fake_features  # noqa: E402

from h2arn import extract as X  # noqa: E402
from h2arn import features as F  # noqa: E402
from h2arn import inference as I  # noqa: E402
from h2arn import train as T  # noqa: E402
from h2arn.checkpoint import save_model_file  # noqa: E402
from h2arn.data import __main__ as D  # noqa: E402

MAINS = {"train": T.main, "inference": I.main, "data": D.main, "extract": X.main}
TINY = ["--d_model", "16", "--nhead", "2", "--num_layers", "1", "--batch_size", "16", "--num_epochs", "1",
        "--device", "cpu", "--num_threads", "1", "--quiet"]


@dataclass
class Env:
    """What a row's arguments refer to: shared read-only features/model, and a fresh folder per row."""
    feats: Path
    model: Path
    tmp: Path
    monkeypatch: pytest.MonkeyPatch

    def train_args(self, *extra, feats: Path | None = None) -> list[str]:
        root = feats or self.feats
        return ["--train_link", str(link(root, "train")), "--val_link", str(link(root, "val")),
                "--run_dir", str(self.tmp / "run"), *TINY, *map(str, extra)]

    def own_feats(self) -> Path:
        """A private copy of the features, for rows that damage them."""
        dst = self.tmp / "feats"
        if not dst.exists():
            shutil.copytree(self.feats, dst)
        return dst


@dataclass
class Case:
    id: str
    tool: str
    args: Callable[[Env], list[str]]
    words: tuple[str, ...]
    code: int = 2
    not_words: tuple[str, ...] = ()
    setup: Callable[[Env], None] | None = None
    check: Callable[[Env], None] | None = None
    skip: str | None = None


# --------------------------------------------------------------------------- setups used by several rows

def _tiny_dataset(root: Path, names=("ding_a", "vase_b"), cloud: Callable[[int], str] | None = None) -> Path:
    """A minimal Elephant train split: caption file + one 8-point cloud per name."""
    rng = np.random.default_rng(0)
    (root / "Elephant").mkdir(parents=True, exist_ok=True)
    caps = {n: [f"a {n}."] for n in names}
    (root / "Elephant" / "Elephant_caption_train.json").write_text(json.dumps({"result": caps}))
    for i, n in enumerate(names):
        p = root / "Elephant" / "pcd_normalize_train" / n / "model.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(cloud(i) if cloud else "\n".join(" ".join(f"{v:.4f}" for v in row)
                                                      for row in rng.uniform(0, 1, (8, 6))) + "\n")
    return root


def _absurd_cloud(i: int) -> str:
    rows = ["0.1 0.2 0.3 0.5 0.5 0.5"] * 7 + (["1e30 0.0 0.0 0.5 0.5 0.5"] if i == 1 else ["0 0 0 0.5 0.5 0.5"])
    return "\n".join(rows) + "\n"


def _user_folder(env: Env) -> None:
    d = env.tmp / "mine"
    d.mkdir()
    (d / "thesis.tex").write_text("years of work")


def _generated_plus_user_file(env: Env) -> None:
    d = env.tmp / "gen"
    (d / "Elephant").mkdir(parents=True)
    (d / "metadata.json").write_text(json.dumps({"generator": "h2arn.data.synthetic", "complete": True}))
    (d / "notes.md").write_text("my notes")


def _existing_run(env: Env) -> None:
    run = env.tmp / "run"
    run.mkdir()
    (run / "metrics.json").write_text('{"earlier": "run"}')


def _float_link_index(env: Env) -> None:
    p = link(env.own_feats(), "train")
    entries = json.loads(p.read_text())
    entries[3][1][1] = 1.7
    p.write_text(json.dumps(entries))


def _float_mask(env: Env) -> None:
    p = env.own_feats() / "Elephant" / "train" / "pc_masks_FAKEPC.pt"
    torch.save(torch.load(p, weights_only=True).float() * 0.3, p)


def _other_width_val(env: Env) -> None:
    n = 4
    F.write_split(env.tmp / "wide", "Elephant", "val", txt=torch.randn(n, 3, 9),
                  txt_mask=torch.ones(n, 3, dtype=torch.bool),
                  pc=torch.randn(n, 5, 10), pc_mask=torch.ones(n, 5, dtype=torch.bool),
                  links=[(i, i) for i in range(n)], txt_model="FAKE", pc_model="FAKEPC")


def _disk_full(env: Env) -> None:
    env.monkeypatch.setattr(T.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1024))


def _read_only(env: Env) -> None:
    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied", str(k.get("dir", "")))
    env.monkeypatch.setattr(T.tempfile, "mkstemp", refuse)


def _torch_write_fails(env: Env) -> None:
    def fail(obj, path):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0")
    env.monkeypatch.setattr(T, "atomic_save", fail)


def _ctrl_c_in_epoch_2(env: Env) -> None:
    real, calls = T.evaluate_split, []

    def evaluate(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)
    env.monkeypatch.setattr(T, "evaluate_split", evaluate)


def _bad_meta_for_overrides(env: Env) -> None:
    root = env.own_feats()
    (root / "Elephant_meta_test.json").write_text("{not json")


def _metadata(obj) -> Callable[[Env], None]:
    def setup(env: Env) -> None:
        _tiny_dataset(env.tmp / "ds")
        (env.tmp / "ds" / "metadata.json").write_text(json.dumps(obj))
    return setup


def _missing_shape(env: Env) -> None:
    root = _tiny_dataset(env.tmp / "ds")
    shutil.rmtree(root / "Elephant" / "pcd_normalize_train" / "vase_b")


def _symlink_loop(env: Env) -> None:
    root = _tiny_dataset(env.tmp / "ds")
    cloud = root / "Elephant" / "pcd_normalize_train" / "vase_b" / "model.txt"
    cloud.unlink()
    loop = cloud.parent / "loop.txt"
    cloud.symlink_to(loop)
    loop.symlink_to(cloud)


def _escaping_name(env: Env) -> None:
    root = _tiny_dataset(env.tmp / "ds")
    caps = {"ding_a": ["a ding."], "../../secret": ["outside"]}
    (root / "Elephant" / "Elephant_caption_train.json").write_text(json.dumps({"result": caps}))
    (env.tmp / "secret").mkdir()


def _kept(path: str, content: str) -> Callable[[Env], None]:
    def check(env: Env) -> None:
        assert (env.tmp / path).read_text() == content, f"{path} was touched"
    return check


def _no_run_written(env: Env) -> None:
    assert not (env.tmp / "run" / "checkpoint.pth").exists() and not (env.tmp / "run" / "best_model.pth").exists()


def _checkpoint_of_epoch_1(env: Env) -> None:
    ck = torch.load(env.tmp / "run" / "checkpoint.pth", weights_only=True)
    assert ck["epoch"] == 1


def _val(flag: str, value: str, *words: str) -> Case:
    return Case(f"train {flag} {value}", "train", lambda e: e.train_args(flag, value), (flag, value, *words),
                check=_no_run_written)


# --------------------------------------------------------------------------- the catalogue

CATALOGUE: list[Case] = [
    # item 2: flags validated before any work, naming the flag, the value and the range
    _val("--learning_rate", "-1", "> 0"),
    _val("--learning_rate", "nan", "> 0"),
    _val("--batch_size", "0", ">= 1"),
    _val("--batch_size", "-4", ">= 1"),
    Case("train --nhead not dividing --d_model", "train", lambda e: e.train_args("--nhead", "3"),
         ("--nhead 3", "--d_model 16", "divide")),
    _val("--dropout", "1.5", "< 1"),
    _val("--dropout", "-0.1", ">= 0"),
    _val("--K", "0", "> 0"),
    _val("--loss_temp", "0", "> 0"),
    _val("--loss_lambda", "-1", ">= 0"),
    _val("--curv_init", "0", "> 0"),
    Case("train --curv_init outside the curvature bounds", "train", lambda e: e.train_args("--curv_init", "100"),
         ("--curv_init 100", "curvature bounds", "10")),
    _val("--warmup_ratio", "1.5", "<= 1"),
    _val("--weight_decay", "-0.01", ">= 0"),
    _val("--dim_feedforward", "0", ">= 1"),
    _val("--eval_batch_size", "0", ">= 1"),
    _val("--grad_clip", "-1", "> 0"),                 # was: silent gradient ascent
    _val("--grad_clip", "0", "> 0"),                  # was: silently frozen training
    _val("--num_epochs", "0", ">= 1"),                # was: "nothing to do (start epoch 1 > 0)" after loading
    _val("--agg_temp_init", "0", "> 0"),
    Case("train --device that does not exist", "train", lambda e: e.train_args("--device", "gpu7"),
         ("gpu7", "--device")),
    # item 4: one file for two outputs
    Case("train --save_model_path == --checkpoint_path", "train",
         lambda e: e.train_args("--save_model_path", e.tmp / "m.pth", "--checkpoint_path", e.tmp / "m.pth"),
         ("--save_model_path", "--checkpoint_path", "same file", "m.pth")),
    Case("train --checkpoint_path == metrics.json", "train",
         lambda e: e.train_args("--checkpoint_path", e.tmp / "run" / "metrics.json"), ("same file", "metrics.json")),
    Case("train --save_model_path on the input link file", "train",
         lambda e: e.train_args("--save_model_path", link(e.own_feats(), "train"), feats=e.own_feats()),
         ("--train_link", "overwrite")),
    # item 5: outputs checked writable before the first epoch, naming the path
    Case("train --run_dir under a file", "train",
         lambda e: e.train_args("--run_dir", e.tmp / "afile" / "run"), ("afile", "is a file", "folder"),
         setup=lambda e: (e.tmp / "afile").write_text("x")),
    Case("train --save_model_path is a folder", "train",
         lambda e: e.train_args("--save_model_path", e.tmp), ("is a folder", "--save_model_path")),
    Case("train read-only output folder", "train", lambda e: e.train_args(),
         ("cannot write", "Permission denied", "run"), setup=_read_only),
    Case("train read-only output folder (real chmod)", "train",
         lambda e: e.train_args("--run_dir", e.tmp / "ro" / "run"), ("cannot write", "ro"),
         setup=lambda e: (e.tmp / "ro").mkdir(mode=0o500),
         skip="root ignores permission bits" if os.geteuid() == 0 else None),
    Case("train no space left", "train", lambda e: e.train_args(), ("MiB free", "need", "run"),
         setup=_disk_full, check=_no_run_written),
    Case("train torch write failure (inline_container)", "train", lambda e: e.train_args(),
         ("checkpoint.pth", "could not be written", "--resume"), not_words=("enforce fail", "inline_container"),
         setup=_torch_write_fails),
    # item 6: a rerun into an existing run folder
    Case("train rerun into an existing run without --resume", "train", lambda e: e.train_args(),
         ("already exists", "--resume", "--overwrite"), setup=_existing_run,
         check=_kept("run/metrics.json", '{"earlier": "run"}')),
    # item 8: Ctrl-C, wrong causes, input hygiene in the loaders
    Case("train Ctrl-C in epoch 2", "train", lambda e: e.train_args("--num_epochs", "3"),
         ("checkpoint (epoch 1)", "checkpoint.pth", "--resume"), code=130, setup=_ctrl_c_in_epoch_2,
         check=_checkpoint_of_epoch_1),
    Case("train missing train link reported as such", "train",
         lambda e: ["--train_link", str(e.tmp / "nope_link_train.json"), "--run_dir", str(e.tmp / "run"), *TINY],
         ("nope_link_train.json", "--train_link", "not found"), not_words=("--val_link", "validation")),
    Case("train val width mismatch blames the training features, not a flag", "train",
         lambda e: e.train_args("--val_link", link(e.tmp / "wide", "val")),
         ("validation text features", "width 9", "training features"), not_words=("was requested",),
         setup=_other_width_val),
    Case("train float link index", "train", lambda e: e.train_args(feats=e.own_feats()),
         ("Elephant_link_train.json", "1.7", "not an integer"), setup=_float_link_index),
    Case("train non-boolean mask", "train", lambda e: e.train_args(feats=e.own_feats()),
         ("pc_masks_FAKEPC.pt", "torch.float32", "torch.bool"), setup=_float_mask),
    # inference
    Case("inference --batch_size 0", "inference",
         lambda e: ["--best_model_path", str(e.model), "--test_link_path", str(link(e.feats, "test")),
                    "--device", "cpu", "--batch_size", "0"], ("--batch_size 0", ">= 1")),
    Case("inference unwritable --output_json", "inference",
         lambda e: ["--best_model_path", str(e.model), "--test_link_path", str(link(e.feats, "test")),
                    "--device", "cpu", "--output_json", str(e.tmp / "afile" / "m.json")],
         ("--output_json", "afile", "is a file"), setup=lambda e: (e.tmp / "afile").write_text("x")),
    Case("inference malformed meta file", "inference",
         lambda e: ["--best_model_path", str(e.model), "--test_link_path", str(link(e.own_feats(), "test")),
                    "--test_txt_path", str(e.own_feats() / "Elephant" / "test" / "txt_features_FAKE.pt"),
                    "--test_cld_path", str(e.own_feats() / "Elephant" / "test" / "pc_features_FAKEPC.pt"),
                    "--device", "cpu"], ("Elephant_meta_test.json", "not valid JSON"), setup=_bad_meta_for_overrides),
    Case("inference float link index", "inference",
         lambda e: ["--best_model_path", str(e.model), "--test_link_path", str(link(e.own_feats(), "train")),
                    "--device", "cpu"], ("1.7", "not an integer"), setup=_float_link_index),
    # item 1: generate --force deletes only what the generator wrote
    Case("data generate --force over a user folder", "data",
         lambda e: ["generate", "--force", "--out", str(e.tmp / "mine")],
         ("mine", "not a dataset written by", "nothing was deleted"), setup=_user_folder,
         check=_kept("mine/thesis.tex", "years of work")),
    Case("data generate --force over a generated folder holding user files", "data",
         lambda e: ["generate", "--force", "--out", str(e.tmp / "gen")], ("notes.md", "nothing was deleted"),
         setup=_generated_plus_user_file, check=_kept("gen/notes.md", "my notes")),
    Case("data generate --force over a file", "data", lambda e: ["generate", "--force", "--out", str(e.tmp / "f")],
         ("is a file", "untouched"), setup=lambda e: (e.tmp / "f").write_text("x"), check=_kept("f", "x")),
    # data info and the point reader
    Case("data info on metadata missing keys", "data", lambda e: ["info", str(e.tmp / "ds")],
         ("metadata.json", "lacks the keys", "generator_version"), setup=_metadata({"shapes": {}})),
    Case("data info on metadata that is a list", "data", lambda e: ["info", str(e.tmp / "ds")],
         ("metadata.json", "JSON object"), setup=_metadata([1, 2])),
    Case("data info on a ../ shape name", "data", lambda e: ["info", str(e.tmp / "ds")],
         ("../../secret", "plain file name"), setup=_escaping_name),
    Case("data info on 1e30 coordinates", "data", lambda e: ["info", str(e.tmp / "ds")],
         ("vase_b", "model.txt", "line 8", "1e+30", "plausible range"),
         setup=lambda e: _tiny_dataset(e.tmp / "ds", cloud=_absurd_cloud)),
    Case("data info on a point file over the size guard", "data", lambda e: ["info", str(e.tmp / "ds")],
         ("model.txt", "limit", "H2ARN_MAX_POINT_FILE_MB"),
         setup=lambda e: (_tiny_dataset(e.tmp / "ds"), e.monkeypatch.setenv("H2ARN_MAX_POINT_FILE_MB", "0.0001"))),
    # extraction
    Case("extract caption naming a missing shape", "extract",
         lambda e: ["--base_data_dir", str(e.tmp / "ds"), "--pc_weights", "random", "--output_dir",
                    str(e.tmp / "out"), "--device", "cpu"],
         ("Elephant_caption_train.json", "vase_b", "is missing"), setup=_missing_shape),
    Case("extract symlink loop", "extract",
         lambda e: ["--base_data_dir", str(e.tmp / "ds"), "--pc_weights", "random", "--output_dir",
                    str(e.tmp / "out"), "--device", "cpu"], ("vase_b", "symlink loop"), setup=_symlink_loop),
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    feats = make_fake_features(tmp_path_factory.mktemp("feats"), n_clouds={"train": 12, "val": 6, "test": 6})
    model_path = tmp_path_factory.mktemp("model") / "best_model.pth"   # an untrained model file is enough here
    cfg = T.TrainConfig(d_model=16, nhead=2, num_layers=1)
    save_model_file(model_path, T.build_model(cfg, D_TXT, D_PCD), epoch=0)
    return feats, model_path


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.id for c in CATALOGUE])
def test_bad_input_gets_one_clear_line(case: Case, shared, tmp_path, monkeypatch, capsys):
    if case.skip:
        pytest.skip(case.skip)
    env = Env(feats=shared[0], model=Path(shared[1]), tmp=tmp_path, monkeypatch=monkeypatch)
    if case.setup:
        case.setup(env)
    rc = MAINS[case.tool](case.args(env))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith(("error:", "interrupted:"))]
    assert rc == case.code, err
    assert "Traceback" not in err and len(lines) == 1, err
    for word in case.words:
        assert word in lines[0], (word, lines[0])
    for word in case.not_words:
        assert word not in lines[0], (word, lines[0])
    if case.check:
        case.check(env)


def test_catalogue_ids_are_unique():
    ids = [c.id for c in CATALOGUE]
    assert len(ids) == len(set(ids))


def test_python_m_entry_point_prints_one_line(tmp_path):
    """The real ``python -m`` path (one subprocess: the others are the same ``main()`` that the table calls):
    exit code 2, one line, no traceback, and the user's folder survives ``generate --force``."""
    _user_folder(Env(feats=tmp_path, model=tmp_path, tmp=tmp_path, monkeypatch=None))
    cmd = [sys.executable, "-m", "h2arn.data", "generate", "--force", "--out", str(tmp_path / "mine")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "nothing was deleted" in proc.stderr
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "years of work"


def test_point_files_are_read_in_chunks_with_exact_line_numbers(tmp_path, monkeypatch):
    """The streaming reader (item 8: a 150 MB file took 2 GB) gives the same array as a whole-file parse, and
    an error in a later chunk still names the right line."""
    from h2arn.data import t3drhit

    monkeypatch.setattr(t3drhit, "_LINES_PER_CHUNK", 1)      # ~64 characters per chunk: many chunks
    rows = np.random.default_rng(0).uniform(0, 1, (50, 7))
    path = tmp_path / "model.txt"
    np.savetxt(path, rows, fmt="%.5f")
    got = t3drhit.read_points(path)
    assert got.shape == (50, 7) and np.allclose(got, rows.astype(np.float32), atol=1e-5)
    lines = path.read_text().splitlines()
    lines[41] = "0.1 0.2 1e30 0.5 0.5 0.5 0"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(t3drhit.DatasetError, match="line 42 has coordinate z"):
        t3drhit.read_points(path, shape="vase_b")


def test_overwrite_and_resume_are_the_ways_to_rerun(shared, tmp_path, monkeypatch, capsys):
    """Positive controls for item 6: the refused rerun works with --overwrite (replaces) or --resume (continues)."""
    env = Env(feats=shared[0], model=Path(shared[1]), tmp=tmp_path, monkeypatch=monkeypatch)
    assert T.main(env.train_args()) == 0
    assert T.main(env.train_args()) == 2 and "--overwrite" in capsys.readouterr().err
    assert T.main(env.train_args("--overwrite")) == 0
    assert T.main(env.train_args("--resume")) == 0                 # a finished run: its results, nothing retrained
    cfg = T.TrainConfig.from_dict({**vars(T.build_parser().parse_args(env.train_args("--num_epochs", "2",
                                                                                     "--overwrite"))), "quiet": None})
    T.train(cfg, stop_after_epoch=1, quiet=True)                  # as if interrupted after epoch 1
    assert T.main(env.train_args("--num_epochs", "2", "--resume")) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2] and metrics["complete"]


def test_validate_config_is_the_api_check_too(tmp_path):
    """The Python API refuses what the CLI refuses, before any file is written."""
    from h2arn.cli import UsageError

    with pytest.raises(UsageError, match=r"--grad_clip -1.0 is out of range: it must be a number > 0"):
        T.train(T.TrainConfig(grad_clip=-1.0, run_dir=str(tmp_path / "run")), quiet=True)
    assert not (tmp_path / "run").exists()
