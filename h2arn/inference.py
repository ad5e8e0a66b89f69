"""Evaluate a trained model on a test split: R@1/5/10 both ways, Rsum, mean rank, MRR.

Same flags as the official ``inference.py`` (``--best_model_path --test_txt_path --test_cld_path
--test_link_path``), with two differences that matter:

* a missing, corrupt or mismatched checkpoint is an error. The official script prints a message
  and then evaluates an *untrained* model, which looks like a (bad) result;
* the model's shapes are read from the checkpoint; ``--d_txt/--d_pcd/--d_model/--nhead/--num_layers``
  are optional and, when given, must agree with it (and the features must agree with both).

``--test_link_path`` alone is enough: the feature paths inside the link file (relative to it) are
used. ``--test_txt_path``/``--test_cld_path`` override them, as in the official code, whose link
file indices refer to those tensors.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import torch

from .checkpoint import CheckpointError, load_model_file
from .cli import UsageError, run_cli
from .device import DeviceError, resolve_device
from .features import FeatureError, FeatureSplit, _link_index, atomic_write_json, load_feature_splits

__all__ = ["load_test_split", "evaluate_checkpoint", "format_metrics", "main"]

METRIC_ORDER = ("t2p_R@1", "t2p_R@5", "t2p_R@10", "p2t_R@1", "p2t_R@5", "p2t_R@10", "rsum",
                "t2p_mean_rank", "p2t_mean_rank", "t2p_mrr", "p2t_mrr")


def load_test_split(link_paths: Sequence[str | os.PathLike], txt_path: str | None = None,
                    cld_path: str | None = None) -> FeatureSplit:
    """Read the test links; with ``txt_path``/``cld_path`` every entry's feature file is replaced by them."""
    link_paths = [Path(p) for p in link_paths]
    if not link_paths:
        raise FeatureError("no test link file given. Fix: pass --test_link_path <file>.")
    if txt_path is None and cld_path is None:
        return load_feature_splits(link_paths)
    for flag, p in (("--test_txt_path", txt_path), ("--test_cld_path", cld_path)):
        if p is not None and not Path(p).is_file():
            raise FeatureError(f"{p}: feature file given by {flag} not found. Fix: pass the .pt file written by "
                               "feature extraction, or drop the flag to use the paths inside the link file.")
    if len(link_paths) != 1:
        raise FeatureError("--test_txt_path/--test_cld_path override the feature files of ONE link file; got "
                           f"{len(link_paths)}. Fix: pass one --test_link_path, or drop the overrides.")
    link = link_paths[0]
    if not link.is_file():
        raise FeatureError(f"{link}: link file not found. Fix: pass the *_link_test.json written by extraction.")
    try:
        entries = json.loads(link.read_text(encoding="utf-8"))
        rewritten = [[[str(Path(txt_path).resolve()) if txt_path else str(_abs(t[0], link)), _link_index(t[1])],
                      [str(Path(cld_path).resolve()) if cld_path else str(_abs(p[0], link)), _link_index(p[1])]]
                     for t, p in entries]
    except Exception as exc:
        raise FeatureError(f"{link}: not a valid link file ({exc}). Fix: re-run feature extraction.") from exc
    with tempfile.TemporaryDirectory() as tmp:
        tmp_link = Path(tmp) / link.name
        tmp_link.write_text(json.dumps(rewritten), encoding="utf-8")
        split = load_feature_splits([tmp_link])
    split.sources = [str(link)]
    meta = link.with_name(link.name.replace("_link_", "_meta_", 1))
    if meta.is_file():
        try:
            m = json.loads(meta.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise FeatureError(f"{meta}: not valid JSON ({exc}). Fix: re-run feature extraction, or delete the "
                               "meta file (it only labels the captions).") from None
        if not isinstance(m, list) or len(m) != split.num_texts:
            raise FeatureError(f"{meta}: expected a list of {split.num_texts} entries (one per caption of {link}), "
                               f"found {type(m).__name__} of length {len(m) if hasattr(m, '__len__') else '?'}. "
                               "Fix: re-run feature extraction.")
        split.meta = m
    return split



def _abs(entry: str, link: Path) -> Path:
    p = Path(entry)
    if p.is_absolute():
        return p
    beside = (link.parent / p).resolve()
    return beside if beside.exists() else p.resolve()


def evaluate_checkpoint(best_model_path: str | os.PathLike, test_links: Sequence[str | os.PathLike], *,
                        test_txt_path: str | None = None, test_cld_path: str | None = None,
                        device: str | torch.device = "auto", expect_config: Mapping | None = None,
                        batch_size: int = 512, amp: bool = False) -> dict:
    """Load a model file strictly, embed the test split, return the metrics dict (floats)."""
    from .evaluate import evaluate_split
    from .train import check_feature_dims

    dev = resolve_device(device)
    model, payload = load_model_file(best_model_path, dev, expect_config=expect_config)
    split = load_test_split(test_links, test_txt_path, test_cld_path)
    from .extract import check_features_match
    check_features_match(payload.get("features"), list(test_links), f"the model {best_model_path}")
    mc = payload["model_config"]
    check_feature_dims(split, mc["d_txt"], mc["d_pcd"], "test",
                       reference=f"the model in {best_model_path} (trained on d_txt={mc['d_txt']}, d_pcd={mc['d_pcd']})")
    metrics = evaluate_split(model, split, dev, batch_size, amp)
    metrics.update({"num_texts": split.num_texts, "num_clouds": split.num_clouds,
                    "best_model_path": str(best_model_path), "epoch": payload.get("epoch"),
                    "test_links": [str(p) for p in test_links], "device": str(dev)})
    return metrics


def format_metrics(m: Mapping) -> str:
    """The paper's table row: R@1/5/10 both ways and Rsum, plus mean rank and MRR."""
    lines = [f"text -> 3D : R@1 {m['t2p_R@1']:6.2f}  R@5 {m['t2p_R@5']:6.2f}  R@10 {m['t2p_R@10']:6.2f}  "
             f"mean rank {m['t2p_mean_rank']:.2f}  MRR {m['t2p_mrr']:.4f}",
             f"3D -> text : R@1 {m['p2t_R@1']:6.2f}  R@5 {m['p2t_R@5']:6.2f}  R@10 {m['p2t_R@10']:6.2f}  "
             f"mean rank {m['p2t_mean_rank']:.2f}  MRR {m['p2t_mrr']:.4f}",
             f"Rsum       : {m['rsum']:.2f}"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m h2arn.inference", description=__doc__.split("\n\n")[0])
    ap.add_argument("--best_model_path", required=True, help="model file written by h2arn.train")
    ap.add_argument("--test_link_path", required=True, nargs="+", help="test link file(s)")
    ap.add_argument("--test_txt_path", default=None, help="override: text feature file the link indices refer to")
    ap.add_argument("--test_cld_path", default=None, help="override: point feature file the link indices refer to")
    for flag in ("d_txt", "d_pcd", "d_model", "nhead", "num_layers"):
        ap.add_argument(f"--{flag}", type=int, default=None, help="optional; must match the checkpoint")
    ap.add_argument("--batch_size", type=int, default=512, help="encoding batch size")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", action="store_true", help="bf16 encoders on CUDA")
    ap.add_argument("--output_json", default=None, help="also write the metrics here")
    return ap


def check_output_json(path: str | os.PathLike) -> None:
    """Refuse an ``--output_json`` that cannot be written, before the (possibly long) evaluation."""
    out = Path(path)
    if out.is_dir():
        raise UsageError(f"--output_json {out} is a folder. Fix: pass a file path such as {out / 'metrics.json'}.")
    folder = out.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"--output_json {out}: {existing} is a file where a folder should be. Fix: pass another path.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".h2arn-write-probe-"):
            pass
    except OSError as exc:
        raise UsageError(f"--output_json {out}: the folder {folder} is not writable ({exc.strerror or exc}). Fix: "
                         "pass a path in a writable folder.") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    expect = {k: getattr(args, k) for k in ("d_txt", "d_pcd", "d_model", "nhead", "num_layers")}

    def body() -> int:
        if args.batch_size < 1:
            raise UsageError(f"--batch_size {args.batch_size} is out of range: it must be an integer >= 1. "
                             "Fix: pass e.g. --batch_size 512 (the default).")
        if args.output_json:
            check_output_json(args.output_json)
        metrics = evaluate_checkpoint(args.best_model_path, args.test_link_path, test_txt_path=args.test_txt_path,
                                      test_cld_path=args.test_cld_path, device=args.device, expect_config=expect,
                                      batch_size=args.batch_size, amp=args.amp)
        print(f"{metrics['num_texts']} texts x {metrics['num_clouds']} clouds from {', '.join(metrics['test_links'])}")
        print(format_metrics(metrics))
        if args.output_json:
            atomic_write_json(metrics, args.output_json, indent=1)
            print(f"metrics written to {args.output_json}")
        return 0

    return run_cli(body, (FeatureError, CheckpointError, DeviceError))


if __name__ == "__main__":
    raise SystemExit(main())
