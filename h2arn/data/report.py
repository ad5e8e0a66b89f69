"""``python -m h2arn.data report [--parts ...] [--write]``: the measured numbers of ``data/README.md``.

Why: the project's rule is that a number in a README comes from a command anyone can rerun, best the command
that writes it. This one measures the data numbers and, with ``--write``, stores them in ``data/report.json``
and renders the marked block of ``data/README.md`` from that JSON, so block and JSON always agree
(``tests/test_data_reports.py`` checks that, and that they come from the current generator version).

Parts (``--parts``; default ``realism tokens generation-ci``, a minute or two; ``all`` adds the slow ones):

* ``realism``: :func:`h2arn.data.realism.realism_report` on ``h2synth-ci`` (needs ``<shared>``);
* ``tokens``: :func:`h2arn.data.redundancy.token_share_report` on the ``ci`` val split;
* ``generation-ci`` / ``generation-full``: ``python -m h2arn.data generate --profile <p>`` into a temporary
  folder, timed (seconds for ``ci``, minutes for ``full``);
* ``extraction-ci``: ``ensure_features('ci')`` (PointNet pretraining, MiniLM captions, point features) in an
  empty temporary course root holding a copy of the dataset, timed (many minutes).

A part that runs replaces its own entry of the JSON; the others keep theirs, each with the command that
measured it, the generator version, the date and the machine, and the block shows them per row.
``--render-only`` rewrites the block from the stored JSON without measuring (after a change of wording). Times depend
on the machine and its load: they are printed with the machine, and no test compares them.
"""
from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from statistics import median
from typing import Callable, Dict, Sequence

from ..cli import UsageError
from ..docs_blocks import marked_block, replace_marked_block, write_text_atomic
from ..paths import data_dir
from .synthetic import GENERATOR_VERSION, ensure_synthetic
from .t3drhit import DatasetError, load_metadata

REPORT_COMMAND = "python -m h2arn.data report --write"
REPORT_BEGIN = f"<!-- data-report:begin (written by {REPORT_COMMAND}; do not edit by hand) -->"
REPORT_END = "<!-- data-report:end -->"
DEFAULT_PARTS = ("realism", "tokens", "generation-ci")
SLOW_PARTS = ("generation-full", "extraction-ci")
PARTS = DEFAULT_PARTS + SLOW_PARTS
TOKENS_SPLIT, TOKENS_POINTS, TOKENS_TOKENS = "val", 1024, 100
SUBSET_NAMES = {"Elephant": "objects", "S3DIS": "rooms"}


def report_json_path() -> Path:
    """``data/report.json``, beside the README whose block it fills."""
    return data_dir() / "report.json"


def readme_path() -> Path:
    return data_dir() / "README.md"


def rerun_command(parts: Sequence[str]) -> str:
    """The command line that remeasures ``parts`` (the default parts need no ``--parts``)."""
    if tuple(parts) == DEFAULT_PARTS:
        return REPORT_COMMAND
    return f"{REPORT_COMMAND} --parts " + ("all" if set(parts) == set(PARTS) else " ".join(parts))


# --------------------------------------------------------------------------- measuring


def machine_info() -> Dict:
    """What the times depend on: CPU model and count, threads, OS, Python, and the load when a part started."""
    from ..timing import cpu_model

    cpu = cpu_model() or platform.processor() or platform.machine()
    return {"cpu": cpu, "cores": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "os": platform.platform(terse=True), "python": platform.python_version(),
            "load_average_1min": round(os.getloadavg()[0], 1)}


def _timed_child(args: Sequence[str], env: Dict[str, str] | None = None) -> Dict[str, float]:
    """Run ``python <args>`` with this checkout's ``h2arn`` first on the path; its wall and CPU seconds."""
    package_parent = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH", "")) if p)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], env={**os.environ, **(env or {}), "PYTHONPATH": path},
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise DatasetError(f"`python {' '.join(args)}` failed (exit {proc.returncode}): {last}. Fix: run it by hand "
                           "to see the whole error, then rerun the report.")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}


def dataset_counts(meta: Dict) -> Dict:
    """Shapes, pairs, distinct captions, clouds per subset and split, points per cloud, level-0 caption sharing."""
    shapes = list(meta["shapes"].values())
    clouds: Dict[str, Dict[str, int]] = {}
    for (subset, split), n in sorted(Counter((s["subset"], s["split"]) for s in shapes).items()):
        clouds.setdefault(subset, {})[split] = n
    points = {sub: sorted({s["n_points"] for s in shapes if s["subset"] == sub}) for sub in clouds}
    level0 = [n for s in shapes for lvl, n in zip(s["caption_levels"], s["caption_group_sizes"]) if lvl == 0]
    return {"shapes": len(shapes), "pairs": meta["n_pairs"], "distinct_captions": meta["n_caption_groups"],
            "clouds": clouds, "points_per_cloud": points,
            "level0_caption_shared_by": [min(level0), median(level0), max(level0)]}


def measure_generation(profile: str) -> Dict:
    with tempfile.TemporaryDirectory(prefix="h2arn-report-") as tmp:
        out = Path(tmp) / f"h2synth-{profile}"
        times = _timed_child(["-m", "h2arn.data", "generate", "--profile", profile, "--out", str(out)])
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        return {**times, **dataset_counts(load_metadata(out)), "bytes": size}


def measure_extraction(profile: str = "ci") -> Dict:
    source = ensure_synthetic(profile)
    with tempfile.TemporaryDirectory(prefix="h2arn-report-") as tmp:
        shutil.copytree(source, Path(tmp) / "data" / source.name)
        code = f"from h2arn.extract import ensure_features; ensure_features({profile!r}, progress=False)"
        return _timed_child(["-c", code], {"H2ARN_ROOT": tmp})


def measure_realism() -> Dict:
    from .realism import realism_report

    rep = realism_report("ci", 0)
    if "skipped" in rep:
        raise UsageError(f"the realism part is not measurable here: {rep['skipped']}; or leave it out "
                         f"(--parts {' '.join(p for p in DEFAULT_PARTS if p != 'realism')})")
    return rep


def measure_tokens() -> Dict:
    from .redundancy import token_share_report

    rep = token_share_report(ensure_synthetic("ci"), TOKENS_SPLIT, TOKENS_POINTS, TOKENS_TOKENS)
    return {"profile": "ci", "split": TOKENS_SPLIT, "num_points": TOKENS_POINTS, "num_tokens": TOKENS_TOKENS,
            "subsets": rep}


# part -> (the standalone command of that measurement, shown in its rows; the function that measures it)
MEASURES: Dict[str, tuple[str, Callable[[], Dict]]] = {
    "realism": ("python -m h2arn.data realism", measure_realism),
    "tokens": ("python -m h2arn.data tokens --profile ci", measure_tokens),
    "generation-ci": ("python -m h2arn.data generate --profile ci --out <empty folder>",
                      lambda: measure_generation("ci")),
    "generation-full": ("python -m h2arn.data generate --profile full --out <empty folder>",
                        lambda: measure_generation("full")),
    "extraction-ci": ("H2ARN_ROOT=<empty root holding data/h2synth-ci> python -c \"from h2arn.extract import "
                      "ensure_features; ensure_features('ci')\"", measure_extraction),
}


def measure(parts: Sequence[str], progress: bool = True) -> Dict[str, Dict]:
    """``{part: {"command", "written_by", "generator_version", "measured", "machine", "result"}}``."""
    from tqdm.auto import tqdm

    out = {}
    for part in tqdm(list(parts), desc="data report", unit="part", disable=None if progress else True):
        command, fn = MEASURES[part]
        machine = machine_info()
        t0 = time.perf_counter()
        result = fn()
        out[part] = {"command": command, "written_by": rerun_command(parts), "generator_version": GENERATOR_VERSION,
                     "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine,
                     "part_wall_s": round(time.perf_counter() - t0, 1), "result": result}
    return out


# --------------------------------------------------------------------------- rendering


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _classes(values: Dict[str, float]) -> str:
    return ", ".join(f"{c} {x:.2f}" for c, x in values.items())


def _rows_generation(profile: str, r: Dict) -> list[tuple[str, str]]:
    splits = ("train", "val", "test")
    clouds = "; ".join(f"{SUBSET_NAMES.get(sub, sub)} " + "/".join(f"{n.get(s, 0):,}" for s in splits)
                       for sub, n in r["clouds"].items())
    points = ", ".join(f"{SUBSET_NAMES.get(sub, sub)} " + "/".join(f"{p:,}" for p in ps)
                       for sub, ps in r["points_per_cloud"].items())
    lo, mid, hi = r["level0_caption_shared_by"]
    return [(f"{profile} generation",
             f"{r['shapes']:,} shapes, {r['pairs']:,} text-3D pairs ({r['distinct_captions']:,} distinct caption "
             f"texts), {r['bytes'] / 1e6:.0f} MB; clouds train/val/test: {clouds}; points per cloud: {points}; a "
             f"shape's level-0 caption text occurs {lo}-{hi} times over all splits (median {mid:g}); "
             f"**{r['cpu_s']:.1f} s of CPU, {r['wall_s']:.1f} s wall**")]


def _rows_extraction(r: Dict) -> list[tuple[str, str]]:
    return [("ci extraction incl. PointNet pretraining",
             f"**{r['cpu_s']:.0f} s of CPU, {r['wall_s']:.0f} s wall** (PointNet pretraining on the training clouds, "
             "MiniLM caption encoding, point features of every split)")]


def _rows_realism(r: Dict) -> list[tuple[str, str]]:
    stored, salient = r["as stored"], r["salient points only"]
    per = r["real_classes"]
    lo, hi = min(per.values()), max(per.values())
    per_text = f"{lo}" if lo == hi else f"{lo}-{hi}"
    step = f"{1 / hi:.2f}" if lo == hi else f"{1 / hi:.2f}-{1 / lo:.2f}"
    ceiling = "ceiling 1.00"
    cats = stored["modelnet40_per_category"]
    return [
        ("real clouds' nearest generated training cloud has their class",
         f"**{stored['nn_class_agreement']:.2f}** as stored, {salient['nn_class_agreement']:.2f} on salient points "
         f"only (chance {r['nn_chance']:.2f}, {ceiling}; {r['n_real']} real clouds of {len(per)} classes, "
         f"{per_text} per class, so one cloud moves its class by {step}; {r['n_generated_train']} "
         f"{r['profile']} training clouds)"),
        ("per class (as stored)", _classes(stored["per_class"])),
        ("per class (salient points only)", _classes(salient["per_class"])),
        ("most frequent confusions (real -> nearest generated class)",
         "as stored: " + ("; ".join(stored["top_confusions"]) or "none") + "; salient points only: "
         + ("; ".join(salient["top_confusions"]) or "none")),
        ("ModelNet40 PointNet top-1 on generated shapes of ModelNet40 classes",
         f"**{stored['modelnet40_top1']:.2f}** as stored, {salient['modelnet40_top1']:.2f} on salient points only "
         f"({r['modelnet40_n']} shapes of every split, chance {1 / 40:.3f}, {ceiling})"),
        ("per category, as stored -> salient points only",
         ", ".join(f"{c} {x:.2f} -> {salient['modelnet40_per_category'][c]:.2f}" for c, x in cats.items())),
    ]


def _rows_tokens(r: Dict) -> list[tuple[str, str]]:
    rows = []
    for subset, row in r["subsets"].items():
        sp, ix = row["spatial"], row["index"]
        rows.append((f"redundant points vs redundant tokens, {SUBSET_NAMES.get(subset, subset)} ({subset})",
                     f"{row['n_clouds']} {r['profile']} {r['split']} clouds, {r['num_points']:,} FPS points -> "
                     f"{r['num_tokens']} tokens: **{_pct(row['points'])} redundant points, "
                     f"{_pct(sp['mostly_redundant_tokens'])} mostly-redundant spatial tokens** "
                     f"({_pct(sp['mixed_tokens'])} mixed); index tokens {_pct(ix['mostly_redundant_tokens'])} "
                     f"mostly redundant, {_pct(ix['mixed_tokens'])} mixed"))
    return rows


def part_rows(part: str, result: Dict) -> list[tuple[str, str]]:
    """``(what, result)`` rows of one part, in README order."""
    if part.startswith("generation-"):
        return _rows_generation(part.split("-", 1)[1], result)
    if part == "extraction-ci":
        return _rows_extraction(result)
    return {"realism": _rows_realism, "tokens": _rows_tokens}[part](result)


def _machine_text(m: Dict) -> str:
    return (f"{m['cpu']}, {m['cores']} cores, OMP_NUM_THREADS={m['omp_num_threads'] or 'unset'}, {m['os']}, "
            f"Python {m['python']}")


def render_block(report: Dict) -> str:
    """The README block of a report (``{"parts": {...}}``): a table with each row's command, version, date and load."""
    parts = report["parts"]
    machines: list[str] = []
    lines = [REPORT_BEGIN, "",
             f"Written by `{REPORT_COMMAND}` (into this block and [`report.json`](report.json)); the last column "
             "says when each row was measured, by which generator version, on which machine (below) under which "
             "load (1-minute load average at its start). `--parts all` also times full generation and extraction "
             "(slow).", "",
             "| what | command | result | measured |", "|---|---|---|---|"]
    for part in PARTS:
        if part not in parts:
            continue
        entry = parts[part]
        machine = _machine_text(entry["machine"])
        if machine not in machines:
            machines.append(machine)
        stamp = (f"v{entry['generator_version']}, {entry['measured']}, machine {machines.index(machine) + 1}, "
                 f"load {entry['machine']['load_average_1min']:g}")
        for what, result in part_rows(part, entry["result"]):
            lines.append(f"| {what} | `{entry['command']}` | {result} | {stamp} |")
    lines += [""] + [f"Machine {i}: {m}." for i, m in enumerate(machines, 1)]
    lines += ["Times are of that machine under that load: yours differ, and no test compares them.", "", REPORT_END]
    return "\n".join(lines)


# --------------------------------------------------------------------------- storing


def load_report(path: Path | None = None) -> Dict:
    """The stored report (``{"parts": {}}`` when there is none yet); a damaged file is named, not overwritten."""
    import json

    path = path or report_json_path()
    if not path.is_file():
        return {"parts": {}}
    try:
        rep = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc}). Fix: restore it from git (git checkout -- {path.name}) "
                           f"or delete it and rerun `{REPORT_COMMAND} --parts all`.") from None
    if not isinstance(rep, dict) or not isinstance(rep.get("parts"), dict):
        raise DatasetError(f"{path} has no 'parts' object, so it was not written by `{REPORT_COMMAND}`. Fix: restore "
                           f"it from git or delete it and rerun `{REPORT_COMMAND} --parts all`.")
    return rep


def check_writable(parts: Sequence[str] = ()) -> None:
    """Before any measuring: the README has its block, the stored JSON is readable, realism's inputs are present."""
    readme = readme_path()
    if not readme.is_file() or marked_block(readme.read_text(encoding="utf-8"), REPORT_BEGIN, REPORT_END) is None:
        raise DatasetError(f"{readme} has no block between '{REPORT_BEGIN}' and '{REPORT_END}'. Fix: restore the "
                           "file from git (git checkout -- data/README.md), then rerun.")
    load_report()
    if "realism" in parts:
        from ..encoders.weights import shared_pointnet_path
        from .realism import real_shapes_dir

        if shared_pointnet_path() is None or real_shapes_dir() is None:
            measure_realism()  # raises the UsageError naming what is missing


def write_report(measured: Dict[str, Dict]) -> Dict[str, Path]:
    """Merge ``measured`` parts into ``data/report.json`` and rewrite the README block from it."""
    from ..features import atomic_write_json

    check_writable()
    readme = readme_path()
    text = readme.read_text(encoding="utf-8")
    rep = load_report()
    rep["about"] = (f"numbers of data/README.md, written by `{REPORT_COMMAND}` (h2arn/data/report.py); times are "
                    "machine-dependent")
    merged = {**rep["parts"], **measured}
    rep["parts"] = {p: merged[p] for p in PARTS if p in merged}
    json_path = atomic_write_json(rep, report_json_path(), indent=1)
    write_text_atomic(readme, replace_marked_block(text, REPORT_BEGIN, REPORT_END, render_block(rep)))
    return {"json": json_path, "readme": readme}


def stale_parts(report: Dict) -> list[str]:
    """Parts measured with another generator version than the current one."""
    return [p for p, e in report["parts"].items() if e.get("generator_version") != GENERATOR_VERSION]


def parse_parts(names: Sequence[str]) -> tuple[str, ...]:
    """``--parts`` values (``all`` = every part), in README order; an unknown one is a :class:`UsageError`."""
    names = list(PARTS) if "all" in names else list(names)
    bad = [n for n in names if n not in PARTS]
    if bad:
        raise UsageError(f"--parts: unknown part(s) {bad}. Fix: choose from {list(PARTS)} or 'all'.")
    return tuple(p for p in PARTS if p in names)
