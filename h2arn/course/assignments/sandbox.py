r"""Run student exercise code in separate, limited processes; return only data, never verdicts.

Why
---
``python -m h2arn.course.assignments grade`` executes code a student wrote. Run in the grader's own process,
one syntax error stops the whole report, an infinite loop hangs it, ``sys.exit`` ends it, and a student
who patches the checker (``checks._compare = lambda *a: None``) or prints ``PASSED`` gets a pass. So the
grader (the *parent*) keeps the references and the verdicts, and student code runs elsewhere:

* one **zygote** process (``python -I``, scrubbed environment, throwaway working directory) imports torch
  and the notebook's import statements once, then **forks one child per exercise**, so each exercise gets
  a fresh process without paying torch's import time again (seconds on a loaded 2-core machine);
* each child drops to user ``nobody`` when the grader runs as root (it can then write nothing of the
  checkout), sets ``RLIMIT_CPU`` (an infinite loop is killed), ``RLIMIT_AS`` (memory is bounded),
  ``RLIMIT_FSIZE`` (no huge files) and an alarm, redirects its output to a file, and installs an audit
  hook that refuses writes, deletions and renames outside its own directory, subprocesses, signals,
  sockets, ``ctypes`` and raising its limits;
* the child executes the exercise cell, calls the function on the inputs the parent wrote
  (``torch.save``), and writes the outputs and the arguments after the call back with ``torch.save``;
  the parent reads them with ``torch.load(weights_only=True)`` (never unpickles student objects) and
  compares them with its own references (:func:`h2arn.course.assignments.checks.judge`).

What a child can do is therefore bounded by the process boundary: whatever it patches or prints, the
verdict is computed in the parent from returned values. The audit hook and the limits stop accidents and
naive attempts (``os.remove``, ``shutil.rmtree``, ``open(..., "w")``, ``subprocess``); they are not a
security boundary against crafted exploits (e.g. ctypes gadgets via already-loaded libraries): grade
untrusted submissions from strangers inside a container as well.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Limits", "Job", "Outcome", "Zygote", "run_jobs"]

RESULT_FILE = "result.pt"
INPUT_FILE = "inputs.pt"
OUTPUT_FILE = "output.txt"
NOBODY = 65534
_MAX_MESSAGE = 2000


@dataclass(frozen=True)
class Limits:
    """Per-exercise limits. cpu_seconds: CPU time of the student code (RLIMIT_CPU, counted after imports);
    wall_seconds: wall-clock time per exercise; memory_mib: address space on top of the zygote's (RLIMIT_AS);
    file_mib: largest file the code may write (RLIMIT_FSIZE)."""

    cpu_seconds: int = 60
    wall_seconds: int = 120
    memory_mib: int = 2048
    file_mib: int = 64


@dataclass(frozen=True)
class Job:
    """One exercise to run: the source of the cell defining ``function`` and the argument tuples to call it on."""

    name: str
    cell_source: str
    cell_label: str
    function: str
    inputs: list[tuple]


@dataclass
class Outcome:
    """What came back from one child. status: ok | not_implemented | error | cell_error | missing |
    timeout | cpu_limit | crashed | no_result | bad_result. outputs / args_after: per call, in case order."""

    status: str
    message: str = ""
    case: int | None = None
    outputs: list = field(default_factory=list)
    args_after: list = field(default_factory=list)
    output_tail: str = ""
    import_errors: list[str] = field(default_factory=list)


def _scrubbed_env(home: Path) -> dict[str, str]:
    """Only what Python and torch need: no tokens, no user variables, no H2ARN_* settings."""
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0", "MPLBACKEND": "Agg", "TMPDIR": str(home)}


def _package_root() -> Path:
    """The folder that holds the ``h2arn`` package the grader itself imported (a worktree wins over an install)."""
    import h2arn
    return Path(h2arn.__file__).resolve().parent.parent


class Zygote:
    """The sandboxed helper process, started early: it imports torch while the grader prepares the cases.

    ``Zygote()`` spawns it (``python -I``, scrubbed environment, throwaway folder); :meth:`run` sends it the
    jobs and collects one :class:`Outcome` per job; :meth:`close` (also on exit of a ``with`` block) stops
    it and deletes the folder.
    """

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="h2arn-grade-"))
        if os.geteuid() == 0:
            os.chmod(self.base, 0o755)
        bootstrap = ("import sys; sys.path.insert(0, sys.argv[1]); "
                     "from h2arn.course.assignments.sandbox import _zygote_main; _zygote_main()")
        self.proc = subprocess.Popen([sys.executable, "-I", "-c", bootstrap, str(_package_root())], cwd=self.base,
                                     env=_scrubbed_env(self.base), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> "Zygote":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        shutil.rmtree(self.base, ignore_errors=True)

    def run(self, jobs: list[Job], imports: list[str], limits: Limits = Limits()) -> list[Outcome]:
        """Run every job in its own forked child; one :class:`Outcome` per job, in order.

        ``imports``: the notebook's import statements, one source string each (run once in the zygote, before
        forking; a failing one is reported with every exercise, not fatal). Nothing a job does can change
        another job's outcome or the grader's state.
        """
        import torch

        plan = []
        for i, job in enumerate(jobs):
            job_dir = self.base / f"job{i:02d}"
            job_dir.mkdir()
            torch.save(job.inputs, job_dir / INPUT_FILE)
            if os.geteuid() == 0:
                os.chown(job_dir, NOBODY, NOBODY)
            plan.append({"dir": str(job_dir), "source": job.cell_source, "label": job.cell_label,
                         "function": job.function})
        spec = {"imports": list(imports), "jobs": plan, "limits": dataclasses.asdict(limits),
                "drop_to": NOBODY if os.geteuid() == 0 else None}
        budget = len(jobs) * (limits.wall_seconds + 5) + 300          # 300 s for imports on a slow machine
        try:
            report, errors = self.proc.communicate(json.dumps(spec), timeout=budget)
            zygote_error = errors if self.proc.returncode else ""
        except subprocess.TimeoutExpired:
            self.proc.kill()
            report, _ = self.proc.communicate()
            zygote_error = f"the grading process exceeded {budget} s and was stopped"
        statuses: dict[int, dict] = {}
        for line in (report or "").splitlines():
            try:
                item = json.loads(line)
                statuses[int(item["job"])] = item
            except (ValueError, KeyError, TypeError):
                continue
        return [_collect(Path(plan[i]["dir"]), statuses.get(i), limits, zygote_error) for i in range(len(jobs))]


def run_jobs(jobs: list[Job], imports: list[str], limits: Limits = Limits()) -> list[Outcome]:
    """Start a :class:`Zygote`, run ``jobs`` in it, clean up (see :meth:`Zygote.run`)."""
    if not jobs:
        return []
    with Zygote() as zygote:
        return zygote.run(jobs, imports, limits)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = text.splitlines()[-lines:]
    return "\n".join(line[:300] for line in kept)


def _clip(value: Any) -> str:
    return str(value)[:_MAX_MESSAGE]


def _collect(job_dir: Path, status: dict | None, limits: Limits, zygote_error: str) -> Outcome:
    """Turn a child's exit status and result file into an Outcome (data only; the verdict is the caller's)."""
    import torch

    tail = _tail(job_dir / OUTPUT_FILE)
    if status is None:
        return Outcome("crashed", "the grading process stopped before this exercise ran"
                       + (f" ({_clip(zygote_error.strip().splitlines()[-1])})" if zygote_error.strip() else ""),
                       output_tail=tail)
    if status.get("timed_out"):
        return Outcome("timeout", f"it ran longer than {limits.wall_seconds} s (wall clock) and was stopped: "
                       "an infinite loop, or a sleep/input() waiting for something?", output_tail=tail)
    signal_number = status.get("signal")
    import signal as _signal
    if signal_number == int(_signal.SIGXCPU):
        return Outcome("cpu_limit", f"it used more than {limits.cpu_seconds} s of CPU time and was stopped: "
                       "an infinite loop?", output_tail=tail)
    if signal_number == int(_signal.SIGALRM):
        return Outcome("timeout", f"it ran longer than {limits.wall_seconds} s (wall clock) and was stopped: "
                       "an infinite loop, or a sleep waiting for something?", output_tail=tail)
    result_path = job_dir / RESULT_FILE
    if not result_path.is_file():
        how = f"killed by signal {signal_number}" if signal_number else f"exit code {status.get('exit')}"
        return Outcome("no_result", f"the process ended ({how}) before returning its results: does the code call "
                       "sys.exit()/os._exit()/exit(), or crash the interpreter?", output_tail=tail)
    try:
        data = torch.load(result_path, weights_only=True)
        if not isinstance(data, dict) or not isinstance(data.get("status"), str):
            raise ValueError("not a result record")
    except Exception as exc:  # noqa: BLE001 - anything wrong with the file is the student's process's doing
        return Outcome("bad_result", f"its result file is unreadable ({_clip(exc)}): did the code write over "
                       "files in its working directory?", output_tail=tail)
    if status.get("exit") not in (0, None) and data["status"] == "ok":
        return Outcome("no_result", f"the process ended with exit code {status.get('exit')} after writing "
                       "its results, which are therefore not trusted", output_tail=tail)
    case = data.get("case")
    return Outcome(str(data["status"]), _clip(data.get("message", "")), int(case) if isinstance(case, int) else None,
                   list(data.get("outputs", [])), list(data.get("args_after", [])), tail,
                   [_clip(e) for e in data.get("import_errors", [])])


# --------------------------------------------------------------------------- inside the sandbox

def _zygote_main() -> None:
    """Import torch, read the plan from stdin, run the notebook's imports once, fork one limited child per job."""
    import signal
    import time

    import torch  # noqa: F401 - imported once here, shared by every forked child

    plan = json.loads(sys.stdin.read())
    base_namespace: dict[str, Any] = {"__name__": "__exercise__"}
    import_errors = []
    for stmt in plan["imports"]:
        try:
            exec(compile(stmt, "<notebook imports>", "exec"), base_namespace)  # noqa: S102
        except Exception as exc:  # noqa: BLE001 - reported with the exercise, not fatal
            import_errors.append(f"{stmt.strip()}: {type(exc).__name__}: {exc}")
    limits = plan["limits"]
    for i, job in enumerate(plan["jobs"]):
        start = time.monotonic()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:                                            # the child: never returns
            code = 1
            try:
                _child(job, dict(base_namespace), import_errors, limits, plan.get("drop_to"))
                code = 0
            except BaseException:  # noqa: BLE001 - the grader's own setup failed: say why in the output file
                import traceback
                traceback.print_exc()
            finally:
                for stream in (sys.stdout, sys.stderr):   # what the student printed, into output.txt
                    try:
                        stream.flush()
                    except BaseException:  # noqa: BLE001
                        pass
                os._exit(code)
        timed_out = False
        deadline = start + limits["wall_seconds"] + 2
        while True:
            done, wait_status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                _, wait_status = os.waitpid(pid, 0)
                timed_out = True
                break
            time.sleep(0.02)
        report = {"job": i, "timed_out": timed_out, "seconds": round(time.monotonic() - start, 3),
                  "exit": os.WEXITSTATUS(wait_status) if os.WIFEXITED(wait_status) else None,
                  "signal": os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else None}
        print(json.dumps(report), flush=True)


def _child(job: dict, namespace: dict, import_errors: list[str], limits: dict, drop_to: int | None) -> None:
    """Confine this process, run the exercise, write the result file. Exceptions are caught and reported."""
    import resource
    import signal

    import torch

    job_dir = job["dir"]
    os.chdir(job_dir)
    for variable in ("HOME", "TMPDIR", "MPLCONFIGDIR"):    # caches and temp files land in the one writable folder
        os.environ[variable] = job_dir
    import tempfile as _tempfile
    _tempfile.tempdir = None
    log = os.open(OUTPUT_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)                                      # the zygote's report pipe is out of reach from here on
    os.dup2(log, 2)
    os.close(log)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(os.devnull)
    if drop_to is not None:
        os.chown(OUTPUT_FILE, drop_to, drop_to)
        os.setgroups([])
        os.setgid(drop_to)
        os.setuid(drop_to)
    inputs = torch.load(INPUT_FILE, weights_only=True)
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(used.ru_utime + used.ru_stime) + int(limits["cpu_seconds"]) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 2))
    resource.setrlimit(resource.RLIMIT_AS, (_address_space() + int(limits["memory_mib"]) * 2 ** 20,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limits["file_mib"]) * 2 ** 20,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.alarm(int(limits["wall_seconds"]))
    sys.addaudithook(_make_guard(os.path.realpath(job_dir)))

    def save(record: dict) -> None:
        record["import_errors"] = import_errors
        torch.save(record, RESULT_FILE)

    function = job["function"]
    try:
        exec(compile(job["source"], job["label"], "exec"), namespace)  # noqa: S102 - the student's cell, confined
    except BaseException as exc:  # noqa: BLE001 - SystemExit too: reported, not obeyed
        save({"status": "cell_error", "message": _student_error(exc, job["label"])})
        return
    fn = namespace.get(function)
    if not callable(fn):
        save({"status": "missing", "message": f"the cell ran but defines no function {function!r}"})
        return
    outputs, args_after = [], []
    for index, args in enumerate(inputs):
        call_args = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)
        try:
            got = fn(*call_args)
        except NotImplementedError as exc:
            save({"status": "not_implemented", "message": str(exc)[:_MAX_MESSAGE], "case": index})
            return
        except MemoryError:
            save({"status": "error", "case": index, "message": f"MemoryError: it needed more than the "
                  f"{limits['memory_mib']} MiB the grader allows (an accidental (N, N, D) tensor?)",
                  "outputs": outputs, "args_after": args_after})
            return
        except BaseException as exc:  # noqa: BLE001
            save({"status": "error", "case": index, "message": _student_error(exc, job["label"]),
                  "outputs": outputs, "args_after": args_after})
            return
        outputs.append(_plain(got))
        args_after.append([a.detach().clone() if isinstance(a, torch.Tensor) else None for a in call_args])
    save({"status": "ok", "outputs": outputs, "args_after": args_after})


def _address_space() -> int:
    """Current virtual memory size of this process in bytes (VmSize)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _student_error(exc: BaseException, label: str) -> str:
    """``Type: message (line N of the cell)``: the last frame inside the student's cell, no grader frames."""
    import traceback

    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == label:
            line = frame.lineno
    if isinstance(exc, SystemExit):
        text = f"SystemExit({exc.code!r}): the code called sys.exit()/exit(); an exercise returns a value instead"
    elif isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and "allocate" in str(exc)):
        text = "MemoryError: it needed more memory than the grader allows (an accidental huge tensor?)"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return (text + (f" (line {line} of the cell)" if line else ""))[:_MAX_MESSAGE]


def _plain(value: Any) -> Any:
    """A returned value as data torch.load(weights_only=True) accepts: tensors, numbers, bools, nested lists."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    try:                                                 # numpy arrays and scalars
        import numpy as np
        if isinstance(value, (np.ndarray, np.generic)):
            return torch.as_tensor(np.asarray(value)).clone()
    except ImportError:
        pass
    return {"unsupported_type": type(value).__name__}


_BLOCKED_EVENTS = frozenset({
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
    "os.kill", "os.killpg", "pty.spawn", "socket.connect", "socket.bind", "socket.sendto", "ctypes.dlopen",
    "ctypes.dlsym", "ctypes.call_function", "ctypes.cdata", "resource.setrlimit", "resource.prlimit",
    "sys._current_frames", "webbrowser.open",
})
_PATH_EVENTS = {  # event -> indexes of path arguments that must stay inside the job directory
    "os.remove": (0,), "os.rmdir": (0,), "os.rename": (0, 1), "shutil.rmtree": (0,), "os.mkdir": (0,),
    "os.chmod": (0,), "os.chown": (0,), "os.truncate": (0,), "os.link": (0, 1), "os.symlink": (1,),
    "os.utime": (0,), "os.setxattr": (0,), "os.removexattr": (0,), "shutil.copyfile": (1,),
    "shutil.copytree": (1,), "shutil.move": (0, 1), "os.chflags": (0,), "os.lchflags": (0,),
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _make_guard(allowed_root: str):
    """An audit hook refusing writes/deletions outside ``allowed_root`` and process/ctypes/limit changes."""
    allowed = allowed_root.rstrip("/") + "/"

    def inside(path: Any) -> bool:
        if isinstance(path, int):                        # an already-open descriptor: opened under this hook
            return True
        try:
            text = os.fsdecode(os.fspath(path))
        except TypeError:
            return False
        full = os.path.realpath(text)                     # relative paths: against the current directory
        return full == allowed_root or full.startswith(allowed) or full == os.devnull

    def guard(event: str, args: tuple) -> None:
        if event in _BLOCKED_EVENTS:
            raise PermissionError(f"the grader does not allow {event} in exercise code")
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(mode, str) and any(ch in mode for ch in "wax+")) or \
                      (isinstance(flags, int) and bool(flags & _WRITE_FLAGS))
            if writing and not inside(path):
                raise PermissionError(f"the grader does not allow writing {path!r} (outside the exercise's "
                                      "working directory)")
            return
        indexes = _PATH_EVENTS.get(event)
        if indexes:
            for k in indexes:
                if k < len(args) and args[k] is not None and not inside(args[k]):
                    raise PermissionError(f"the grader does not allow {event} on {args[k]!r} (outside the "
                                          "exercise's working directory)")
    return guard
