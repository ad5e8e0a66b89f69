"""Run the benchmark scripts and (with ``--write``) paste what they print into ``benchmarks/README.md``.

    python benchmarks/run_all.py                 # run and print; README untouched
    python benchmarks/run_all.py --write         # ... and replace the generated blocks of the README
    python benchmarks/run_all.py --write --only train extract-pipeline      # some blocks only
    python benchmarks/run_all.py --write --only train-paper extract-full --full-dataset data/h2synth-full

Every number in the README's tables sits between ``<!-- run_all:<name> begin -->`` and
``<!-- run_all:<name> end -->`` and is the verbatim output of the command named in the block's first
line (machine, time and load average included, printed by the scripts themselves). A block that was
not run this time is left as it is, with its own date; the prose around the blocks carries no
numbers. Progress bars and model-loading chatter are dropped from the pasted output.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"

# name -> (arguments after `python`, what it is); the default set is what a plain run regenerates
JOBS = {
    "train": (["benchmarks/bench_train.py", "--steps", "5", "--profile"], "training step, ci config, CPU"),
    "train-paper": (["benchmarks/bench_train.py", "--configs", "paper", "--paper-batch", "8"],
                    "training step, paper widths, CPU"),
    "extract-pipeline": (["benchmarks/bench_extract.py", "--pipeline"], "whole extraction, ci data, full settings"),
    "extract-full": (["benchmarks/bench_extract.py", "--pipeline", "--dataset", "{full_dataset}", "--splits", "test"],
                     "whole extraction of the full benchmark's test split (a fifth), scaled to all of it"),
    "extract-encoders": (["benchmarks/bench_extract.py", "--quick"], "encoder throughput"),
    "lorentz": (["benchmarks/bench_lorentz.py", "--skip-geoopt"], "pairwise distance vs one GEMM"),
    "index": (["benchmarks/bench_index.py", "--quick"], "LorentzIndex growth curve, quick"),
}
DEFAULT = ["train", "extract-pipeline", "extract-encoders", "lorentz", "index"]
_NOISE = re.compile(r"(Loading weights|Writing model shards|\d+%\|)")


def run_job(name: str, full_dataset: str | None) -> tuple[str, str]:
    """``(command line, cleaned stdout)``; raises SystemExit with the script's stderr tail when it fails."""
    args = [a.format(full_dataset=full_dataset) for a in JOBS[name][0]]
    command = "python " + " ".join(args)
    print(f"== {name}: {command}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=HERE.parent, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: `{command}` failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    lines = [ln.rstrip() for ln in proc.stdout.splitlines() if not _NOISE.search(ln)]
    output = "\n".join(lines).strip()
    print(output)
    print(f"({time.perf_counter() - start:.0f} s)\n", flush=True)
    return command, output


def replace_block(text: str, name: str, command: str, output: str) -> str:
    """The README with block ``name`` replaced (appended at the end when the README has no such block)."""
    begin, end = f"<!-- run_all:{name} begin -->", f"<!-- run_all:{name} end -->"
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    block = (f"{begin}\n`{command}`, pasted by `python benchmarks/run_all.py --write` on {stamp}:\n\n"
             f"```text\n{output}\n```\n{end}")
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text)
    return text.rstrip("\n") + "\n\n" + block + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="replace the generated blocks of benchmarks/README.md")
    ap.add_argument("--only", nargs="+", choices=sorted(JOBS), default=None, help=f"blocks to run (default {DEFAULT})")
    ap.add_argument("--full-dataset", default=None, help="dataset root of the full benchmark (for extract-full)")
    args = ap.parse_args(argv)
    names = args.only or DEFAULT
    if "extract-full" in names and not args.full_dataset:
        print("error: --only extract-full needs --full-dataset DIR (e.g. data/h2synth-full, built by "
              "`python -m h2arn.data generate --profile full`)", file=sys.stderr)
        return 2
    if args.full_dataset and not Path(args.full_dataset).is_dir():
        print(f"error: --full-dataset {args.full_dataset}: folder not found. Fix: generate it with "
              "`python -m h2arn.data generate --profile full --out DIR`.", file=sys.stderr)
        return 2
    for name in names:
        command, output = run_job(name, args.full_dataset)
        if args.write:   # after each job, so a later failure keeps what was measured
            README.write_text(replace_block(README.read_text(encoding="utf-8"), name, command, output),
                              encoding="utf-8")
    if args.write:
        print(f"wrote {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
