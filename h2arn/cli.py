"""One wrapper for every command-line entry point: a known bad input is one line on stderr and exit code 2.

Why: the project's rule is that a bad input (a wrong flag, a missing or corrupt file, an output that
cannot be written) ends with ONE line that names the flag or the file and the fix, never a traceback.
Each module raises its own error type (``FeatureError``, ``CheckpointError``, ``DatasetError``...), all
subclasses of :class:`ValueError` whose messages already say what to do; :func:`run_cli` turns them,
and :class:`UsageError` (a flag value or output path refused before any work), into that line.
A Ctrl-C ends with exit code 130 and one line too (training says where its checkpoint is).

Anything else (a genuine bug) keeps its traceback: hiding it would make it unfixable.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

__all__ = ["UsageError", "Interrupted", "run_cli", "EXIT_BAD_INPUT", "EXIT_INTERRUPTED"]

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130   # 128 + SIGINT, what a shell reports for Ctrl-C


class UsageError(ValueError):
    """A flag value, or an output path, is refused before any work starts; the message names it and the fix."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, carrying the one line to print (e.g. where the last complete checkpoint is)."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"error: {text}"


def run_cli(body: Callable[[], int | None], errors: Sequence[type[BaseException]] = ()) -> int:
    """Run ``body`` (a CLI's work after argument parsing); map known errors to one stderr line and exit 2.

    ``errors`` are the error types the CLI's modules raise for bad inputs (their messages name the
    file and the fix); :class:`UsageError` and :class:`OSError` (an unreadable or unwritable path,
    reported with its file name) are always included. Returns the exit code.
    """
    known = (UsageError, *errors)
    try:
        return int(body() or 0)
    except Interrupted as exc:
        print(_one_line(exc).replace("error: ", "interrupted: ", 1), file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("interrupted: stopped by Ctrl-C; files are written atomically, so no half-written file was left.",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except known as exc:
        print(_one_line(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        where = exc.filename if exc.filename is not None else "a file"
        print(f"error: {where}: {exc.strerror or exc}. Fix: check that the path exists, is the right kind "
              "(file or folder), and is readable/writable.", file=sys.stderr)
        return EXIT_BAD_INPUT


def rank_is_main() -> bool:
    """False in the non-zero ranks of a torchrun launch (they print nothing)."""
    return int(os.environ.get("RANK", "0") or 0) == 0
