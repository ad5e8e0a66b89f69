"""Run the course: execute every notebook in order with papermill, into a build folder.

    python -m h2arn.course run --profile ci            # all notebooks, CPU-sized
    python -m h2arn.course run --profile full          # paper-sized (GPU recommended)
    python -m h2arn.course run 01 05 --profile ci      # a selection (by number prefix or file name)
    python -m h2arn.course check                       # static checks only (parameters cell, clean outputs)
    python -m h2arn.course summary --profile ci        # table of what papermill executed last
    python -m h2arn.course site --profile ci           # (re)write build/site/ from the executed notebooks

Each notebook runs in its own papermill process on a fresh kernel, with the working directory set to
``notebooks/``, the kernel name passed explicitly, a per-cell and a per-notebook timeout, and only
``profile`` (and ``device`` when given) injected. Executed copies go to ``build/notebooks/<profile>/``;
the sources are never overwritten. A failure prints one line naming the notebook and the failing cell,
and the command exits non-zero after the summary table. ``run`` then writes the readable site
(``build/site/``: every executed chapter as HTML and an index, see :mod:`h2arn.course.site`).

Executed copies are meant to be read: figures are drawn inline (matplotlib's inline backend; ``figures/``
still gets its PNGs from ``save_figure``) and progress bars are off in batch runs, because a saved
ipywidgets bar shows a frozen "0%" to everyone who opens the notebook later.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from h2arn.paths import build_dir, repo_root

DEFAULT_KERNEL = "h2arn-course"
COURSE_KERNELSPEC = {"name": DEFAULT_KERNEL, "display_name": "Python (h2arn-course)", "language": "python"}
PROFILES = ("ci", "full")
_NOTEBOOK_RE = re.compile(r"^\d\d_.*\.ipynb$")


class CourseError(RuntimeError):
    """A notebook cannot be run (missing, malformed); the message names the notebook."""


@dataclass
class NotebookResult:
    notebook: str
    status: str          # "ok" | "failed" | "timeout" | "invalid"
    seconds: float
    message: str = ""
    output: Path | None = None


def notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def list_notebooks(directory: Path | None = None) -> list[Path]:
    """The course notebooks ``NN_*.ipynb`` in order."""
    directory = directory or notebooks_dir()
    return sorted(p for p in directory.glob("*.ipynb") if _NOTEBOOK_RE.match(p.name))


def select_notebooks(selection: list[str], directory: Path | None = None) -> list[Path]:
    """Resolve a selection of number prefixes (``01``), names or paths; unknown ones raise CourseError."""
    directory = directory or notebooks_dir()
    available = list_notebooks(directory)
    if not selection:
        return available
    chosen = []
    for item in selection:
        path = Path(item)
        if path.suffix == ".ipynb":
            candidates = [path if path.is_absolute() or path.exists() else directory / path.name]
        else:
            candidates = [p for p in available if p.name.startswith(item)]
        candidates = [c for c in candidates if c.is_file()]
        if not candidates:
            raise CourseError(f"notebook '{item}' not found in {directory} "
                              f"(available: {', '.join(p.name for p in available) or 'none'})")
        chosen.extend(candidates)
    return chosen


def check_notebook(path: Path) -> list[str]:
    """Static problems of a source notebook: JSON, exactly one ``parameters`` cell, no committed outputs,
    and the course kernel in its metadata (``python3`` would start, in JupyterLab, a kernel without torch)."""
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return [f"{path.name}: not a readable notebook ({exc})"]
    problems = []
    kernelspec = nb.get("metadata", {}).get("kernelspec", {})
    if kernelspec.get("name") != DEFAULT_KERNEL:
        problems.append(f"{path.name}: kernelspec is '{kernelspec.get('name')}', not '{DEFAULT_KERNEL}'; set "
                        f"metadata.kernelspec to {json.dumps(COURSE_KERNELSPEC)}")
    cells = nb.get("cells", [])
    tagged = [i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        problems.append(f"{path.name}: needs exactly one cell tagged 'parameters' (found {len(tagged)}); "
                        "papermill would inject the parameters at the top instead")
    elif cells[tagged[0]].get("cell_type") != "code":
        problems.append(f"{path.name}: the 'parameters' cell must be a code cell")
    else:
        source = "".join(cells[tagged[0]].get("source", ""))
        if not re.search(r"^profile\s*=", source, re.M):
            problems.append(f"{path.name}: the 'parameters' cell does not define `profile`")
    for i, cell in enumerate(cells):
        if cell.get("cell_type") == "code" and (cell.get("outputs") or cell.get("execution_count")):
            problems.append(f"{path.name}: cell {i} has committed outputs; clear them before committing")
            break
    return problems


def _failing_cell(output: Path, with_error: bool = True) -> str:
    """Find the failing cell in papermill's output notebook: 'cell N: ErrorName: message'.

    ``with_error=False`` names the cell only: after a cell timeout or a dead kernel the recorded error is
    papermill's interrupt, which would blame the wrong cause.
    """
    try:
        nb = json.loads(output.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return "no output notebook was written"
    code_index = 0
    for cell in nb.get("cells", []):
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.get("cell_type") != "code" or "papermill-error-cell-tag" in tags or "injected-parameters" in tags:
            continue   # count code cells as in the source notebook
        code_index += 1
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                first_line = "".join(cell.get("source", "")).strip().splitlines()[:1]
                where = f"code cell {code_index} ({first_line[0][:60]!r})" if first_line else f"code cell {code_index}"
                return f"{where}: {out.get('ename')}: {str(out.get('evalue'))[:300]}" if with_error else where
        if cell.get("metadata", {}).get("papermill", {}).get("status") == "running":
            return f"code cell {code_index} was running when the notebook stopped"
    return "papermill failed before any cell reported an error (see the log)"


# Run by IPython in every batch kernel before the notebook's first cell (see batch_kernel_env). tqdm.auto
# would pick ipywidgets bars under papermill; their saved state is a frozen "0%" in the executed copy.
# The console bar instead sees that the kernel's stderr is not a terminal, and bars created with
# disable=None (the package's convention) stay quiet. Students running the notebook in JupyterLab
# get the normal widget bars, since this file is only on the batch kernel's IPYTHONDIR.
_BATCH_STARTUP = """\
import tqdm.auto as _auto, tqdm.std as _std
_auto.tqdm, _auto.trange = _std.tqdm, _std.trange
del _auto, _std
"""


def batch_kernel_env(work_dir: Path) -> dict[str, str]:
    """Environment for a papermill kernel whose executed copy is kept: inline figures, no frozen bars.

    ``work_dir`` receives a private IPython profile holding the start-up file above.
    """
    startup = work_dir / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00_h2arn_batch.py").write_text(_BATCH_STARTUP, encoding="utf-8")
    return dict(os.environ, PYTHONUNBUFFERED="1",
                MPLBACKEND="module://matplotlib_inline.backend_inline",   # figures stored in the notebook
                IPYTHONDIR=str(work_dir / "ipython"),
                HF_HUB_DISABLE_PROGRESS_BARS="1",                        # transformers' own bars
                TQDM_MININTERVAL="5")


def run_notebook(path: Path, profile: str, out_dir: Path, *, kernel: str = DEFAULT_KERNEL,
                 cell_timeout: int = 600, notebook_timeout: int = 1800, device: str | None = None,
                 log_output: bool = False) -> NotebookResult:
    """Execute one notebook with papermill in a subprocess and classify the outcome."""
    name = path.name
    if not path.is_file():
        return NotebookResult(name, "invalid", 0.0, f"{path}: notebook not found")
    problems = check_notebook(path)
    if problems:
        return NotebookResult(name, "invalid", 0.0, "; ".join(problems))
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / name
    log = out_dir / f"{path.stem}.log"
    cmd = [sys.executable, "-m", "papermill", str(path), str(output), "-k", kernel,
           "--cwd", str(path.parent), "-p", "profile", profile,
           "--execution-timeout", str(cell_timeout), "--no-progress-bar"]
    if device:
        cmd += ["-p", "device", device]
    if log_output:
        cmd.append("--log-output")
    env = batch_kernel_env(out_dir / ".kernel")
    start = time.perf_counter()
    try:
        with open(log, "w", encoding="utf-8") as log_fh:
            proc = subprocess.run(cmd, stdout=log_fh, stderr=subprocess.STDOUT, env=env,
                                  timeout=notebook_timeout, cwd=str(repo_root()))
    except subprocess.TimeoutExpired:
        seconds = time.perf_counter() - start
        return NotebookResult(name, "timeout", seconds,
                              f"{name}: exceeded the {notebook_timeout}s notebook timeout; "
                              f"{_failing_cell(output)} (log: {log})", output)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")
        if "No such kernel" in tail or "NoSuchKernel" in tail:
            message = (f"{name}: kernel '{kernel}' is not installed. Fix: python -m ipykernel install "
                       f"--sys-prefix --name {kernel}")
        elif "CellTimeoutError" in tail or "cell timed out" in tail:
            message = (f"{name}: {_failing_cell(output, False)} ran past the {cell_timeout}s cell timeout. Fix: "
                       f"pass --cell-timeout with more seconds, or run a smaller profile (log: {log})")
        elif "DeadKernelError" in tail or "Kernel died" in tail:
            message = (f"{name}: the kernel died in {_failing_cell(output, False)} (out of memory, or a crash in "
                       f"native code). Fix: free memory or run a smaller profile, then rerun (log: {log})")
        else:
            message = f"{name}: {_failing_cell(output)} (log: {log})"
        return NotebookResult(name, "failed", seconds, message, output)
    return NotebookResult(name, "ok", seconds, "", output)


_ECHO_RE = re.compile(r"^(PosixPath\(|WindowsPath\(|<torch\._C\.Generator|<matplotlib\.|\[<matplotlib\.)")
_PROGRESS_RE = re.compile(r"\d+%\|")


def executed_output_problems(output: Path) -> list[str]:
    """What a reader of an executed notebook should not see: progress bars frozen in the saved outputs,
    echoes of objects (``PosixPath(...)``, ``<torch._C.Generator ...>``, ``<matplotlib...>``; end the line
    with ``;`` or assign it), and a chapter that calls ``save_figure`` but shows no figure inline."""
    nb = json.loads(output.read_text(encoding="utf-8"))
    problems, images, saves = [], 0, False
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        saves = saves or "save_figure(" in "".join(cell.get("source", ""))
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            images += "image/png" in data
            text = "".join(data.get("text/plain", "")) if out.get("output_type") == "execute_result" else ""
            stream = "".join(out.get("text", "")) if out.get("output_type") == "stream" else ""
            if "application/vnd.jupyter.widget-view+json" in data and _PROGRESS_RE.search("".join(data.get("text/plain", ""))):
                problems.append(f"{output.name} cell {i}: a progress-bar widget is saved in the output")
            elif _PROGRESS_RE.search(stream):
                problems.append(f"{output.name} cell {i}: a progress bar is saved in the output")
            if _ECHO_RE.match(text.strip()):
                problems.append(f"{output.name} cell {i}: echoes {text.strip()[:60]!r}; end the line with ';'")
    if saves and not images:
        problems.append(f"{output.name}: calls save_figure but shows no figure inline")
    return problems


def format_table(results: list[NotebookResult]) -> str:
    width = max([len("notebook")] + [len(r.notebook) for r in results])
    lines = [f"{'notebook':<{width}}  {'status':<8}  {'seconds':>8}", f"{'-' * width}  {'-' * 8}  {'-' * 8}"]
    lines += [f"{r.notebook:<{width}}  {r.status:<8}  {r.seconds:8.1f}" for r in results]
    lines.append(f"{'total':<{width}}  {'':<8}  {sum(r.seconds for r in results):8.1f}")
    return "\n".join(lines)


def _selected_or_none(args: argparse.Namespace) -> list[Path] | None:
    """The notebooks the command line names, or ``None`` after printing the one-line reason (exit 2)."""
    try:
        return select_notebooks(args.notebooks)
    except CourseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    notebooks = _selected_or_none(args)
    if notebooks is None:
        return 2
    if not notebooks:
        print(f"error: no notebooks found in {notebooks_dir()}", file=sys.stderr)
        return 2
    out_dir = Path(args.output_dir) if args.output_dir else build_dir() / "notebooks" / args.profile
    cell_timeout = args.cell_timeout or (600 if args.profile == "ci" else 7200)
    notebook_timeout = args.notebook_timeout or (900 if args.profile == "ci" else 6 * 3600)
    results = []
    for path in notebooks:
        print(f"[h2arn.course] running {path.name} (profile={args.profile}) ...", flush=True)
        result = run_notebook(path, args.profile, out_dir, kernel=args.kernel, cell_timeout=cell_timeout,
                              notebook_timeout=notebook_timeout, device=args.device, log_output=args.log_output)
        results.append(result)
        if result.status != "ok":
            print(f"[h2arn.course] FAILED {result.message}", file=sys.stderr, flush=True)
            if args.fail_fast:
                break
    print()
    print(format_table(results))
    print(f"\nexecuted notebooks: {out_dir}")
    if not args.no_site:
        _publish(out_dir, _site_dir(args), args.profile)
    return 0 if all(r.status == "ok" for r in results) else 1


def _site_dir(args: argparse.Namespace) -> Path:
    """``--site-dir``; else ``<output-dir>/site`` when the executed copies went elsewhere; else build/site/."""
    if args.site_dir:
        return Path(args.site_dir)
    return Path(args.output_dir) / "site" if args.output_dir else build_dir() / "site"


def _publish(out_dir: Path, site_dir: Path, profile: str) -> bool:
    from h2arn.course.site import write_site   # nbconvert is only needed here

    try:
        index = write_site(out_dir, site_dir, profile)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False
    print(f"course site: {index}")
    return True


def executed_summary(out_dir: Path) -> list[NotebookResult]:
    """Read back what papermill recorded in executed notebooks (status, duration) in ``out_dir``."""
    results = []
    for path in sorted(out_dir.glob("*.ipynb")):
        if not _NOTEBOOK_RE.match(path.name):
            continue
        try:
            meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {}).get("papermill", {})
        except (OSError, json.JSONDecodeError):
            results.append(NotebookResult(path.name, "invalid", 0.0, "unreadable output notebook", path))
            continue
        status = "failed" if meta.get("exception") else ("ok" if meta.get("end_time") else "unfinished")
        results.append(NotebookResult(path.name, status, float(meta.get("duration") or 0.0), "", path))
    return results


def _summary(args: argparse.Namespace) -> int:
    out_dir = Path(args.output_dir) if args.output_dir else build_dir() / "notebooks" / args.profile
    results = executed_summary(out_dir)
    if not results:
        print(f"error: no executed notebooks in {out_dir}", file=sys.stderr)
        return 1
    print(f"notebooks executed by papermill in {out_dir}:")
    print(format_table(results))
    ok = all(r.status == "ok" for r in results)
    if args.write_readme:
        if not ok or len(results) != len(list_notebooks()):
            print(f"error: --write-readme needs every chapter executed without error in {out_dir}; "
                  "fix: ./course run --profile " + args.profile, file=sys.stderr)
            return 2
        from h2arn.course.chapter_times import write_readme_times

        print(f"chapter times written to {write_readme_times(results, args.profile, repo_root() / 'README.md')}")
    return 0 if ok else 1


def _site(args: argparse.Namespace) -> int:
    out_dir = Path(args.output_dir) if args.output_dir else build_dir() / "notebooks" / args.profile
    return 0 if _publish(out_dir, _site_dir(args), args.profile) else 2


def _check(args: argparse.Namespace) -> int:
    notebooks = _selected_or_none(args)
    if notebooks is None:
        return 2
    problems = [p for nb in notebooks for p in check_notebook(nb)]
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m h2arn.course", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute notebooks with papermill into build/notebooks/<profile>/")
    run.add_argument("notebooks", nargs="*", help="number prefixes or names (default: all, in order)")
    run.add_argument("--profile", choices=PROFILES, default="ci")
    run.add_argument("--device", default=None, help="inject device=... (default: each notebook's own, 'auto')")
    run.add_argument("--kernel", default=DEFAULT_KERNEL, help="Jupyter kernel name passed to papermill")
    run.add_argument("--output-dir", default=None)
    run.add_argument("--cell-timeout", type=int, default=None, help="seconds per cell")
    run.add_argument("--notebook-timeout", type=int, default=None, help="seconds per notebook")
    run.add_argument("--fail-fast", action="store_true", help="stop at the first failing notebook")
    run.add_argument("--log-output", action="store_true", help="stream cell output into the per-notebook log")
    run.add_argument("--site-dir", default=None, help="where the HTML site goes (default: build/site/)")
    run.add_argument("--no-site", action="store_true", help="do not write the HTML site")
    run.set_defaults(func=_run)
    summary = sub.add_parser("summary", help="table of the executed notebooks in build/notebooks/<profile>/")
    summary.add_argument("--profile", choices=PROFILES, default="ci")
    summary.add_argument("--output-dir", default=None)
    summary.add_argument("--write-readme", action="store_true",
                         help="rewrite the README's chapter-times block from these executed chapters")
    summary.set_defaults(func=_summary)
    site = sub.add_parser("site", help="write build/site/ (HTML chapters + index) from executed notebooks")
    site.add_argument("--profile", choices=PROFILES, default="ci")
    site.add_argument("--output-dir", default=None, help="folder of executed notebooks (default: build/notebooks/<profile>/)")
    site.add_argument("--site-dir", default=None, help="where the HTML site goes (default: build/site/)")
    site.set_defaults(func=_site)
    check = sub.add_parser("check", help="static checks of the source notebooks")
    check.add_argument("notebooks", nargs="*")
    check.set_defaults(func=_check)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
