r"""Autograder checks: compare a student's function with the package's reference on seeded random inputs.

Why this shape
--------------
An exercise in a notebook is a function the student writes (``def my_dist(x, y, c): ...``) followed
by ``check("dist", my_dist)``. The check calls the function on a fixed set of *seeded* random cases
(float32 and float64, several curvatures, batched shapes, and a few edge cases that the textbook formula
gets wrong: the zero vector, a point and itself, the saturated cone) and compares the result with the
reference implementation in this package (:mod:`h2arn.lorentz`, :mod:`h2arn.aggregation`,
:mod:`h2arn.losses`, :mod:`h2arn.evaluate`). The same inputs every run, so a failure is reproducible and
the message can name the exact input.

A failure raises :class:`CheckFailure` (an ``AssertionError``) whose message says which case failed,
the input at the worst element, expected vs got, the tolerance and a hint; for the mistakes students
actually make (time coordinate last, a missing ``1/sqrt(c)``, padding in the mean, one direction of the
loss only, ties counted against the target) the hint names the mistake. A stub that still raises
``NotImplementedError`` gives :class:`NotImplementedYet`, also an ``AssertionError``, that says so.

Tolerances are per dtype and per case. They accept any sensible clamp (``asin``/``acos``) and are loose
only where the reference itself is clamped (angles near 0 or pi/2), which the case label says. They do
NOT accept what chapter 01 teaches to avoid: ``logmap0`` has float32 points 1e-6..1e-3 from the origin,
where ``arccosh(sqrt(c) x_0)`` returns 0, and ``dist`` has pairs 1e-4..3e-3 apart (1e-7..3e-6 in
float64), where ``acosh(-c<x,y>_L)`` returns noise; the stable forms (``asinh`` of the space norm, the
chord form) pass. The expected values of those cases are computed in float64 from the rounded inputs.

The checks are used in two ways: :func:`check` in the student's own kernel (feedback), and
:func:`judge` by the isolated grader (:mod:`h2arn.course.assignments.grade`), which compares values a
sandboxed process returned (:mod:`h2arn.course.assignments.sandbox`) with the same cases and messages.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor

from h2arn import lorentz as L

__all__ = ["CheckFailure", "NotImplementedYet", "Check", "Case", "CHECKS", "CURVATURES", "DTYPES",
           "check", "run_check", "available_checks", "judge", "not_implemented", "crash_failure",
           "reference_hierarchical_map", "reference_mips_points", "reference_mips_queries"]

CURVATURES: tuple[float, ...] = (0.25, 1.0, 4.0)
DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float64)
# (rtol, atol) for well-conditioned random cases
_TOL = {torch.float32: (2e-4, 2e-5), torch.float64: (1e-7, 1e-9)}


class CheckFailure(AssertionError):
    """The student's function disagrees with the reference (or crashed) on one case; see the message."""


class NotImplementedYet(CheckFailure):
    """The exercise function still raises ``NotImplementedError`` (the generated stub)."""


@dataclass
class Case:
    """One call of the student's function.

    args: positional arguments (tensors are cloned before the call, and the originals checked untouched).
    expected: the reference output. batch_ndim: how many leading output dims index independent items, so
    the failure message can show the inputs of the worst item. diagnose(got) may name a known mistake.
    """

    label: str
    args: tuple
    arg_names: tuple[str, ...]
    expected: Any
    rtol: float
    atol: float
    batch_ndim: int = 1
    diagnose: Callable[[Tensor], str | None] | None = None
    hint: str = ""
    check_dtype: bool = True


@dataclass
class Check:
    """One exercise's autograder: a name, the signature students implement, the reference, and its cases."""

    name: str
    signature: str
    reference: str
    teaches: str
    cases: Callable[[], Iterator[Case]]
    hint: str = ""
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- helpers

def _generator(name: str, salt: int = 0) -> torch.Generator:
    """A torch generator seeded from the check's name: the same inputs on every machine and run."""
    g = torch.Generator()
    g.manual_seed(zlib.crc32(f"{name}:{salt}".encode()) & 0x7FFFFFFF)
    return g


def _directions(n: int, dim: int, g: torch.Generator) -> Tensor:
    """``(n, dim)`` unit vectors, float64."""
    u = torch.randn(n, dim, generator=g, dtype=torch.float64)
    return u / u.norm(dim=-1, keepdim=True)


def _tangents(n: int, dim: int, c: float, g: torch.Generator, r_min: float, r_max: float) -> Tensor:
    """``(n, dim)`` float64 tangent vectors at the origin whose points lie at distance r in [r_min, r_max]."""
    r = r_min + (r_max - r_min) * torch.rand(n, 1, generator=g, dtype=torch.float64)
    return _directions(n, dim, g) * r / math.sqrt(c)


def _points(n: int, dim: int, c: float, g: torch.Generator, r_min: float = 0.1, r_max: float = 3.0) -> Tensor:
    """``(n, dim+1)`` float64 points on the hyperboloid at distance r in [r_min, r_max] from the origin."""
    return L.expmap0(_tangents(n, dim, c, g, r_min, r_max), c)


def _fmt(value: Any, max_items: int = 6) -> str:
    """A short, readable rendering of a tensor (first items only) or a number."""
    if isinstance(value, Tensor):
        if value.dim() == 0:
            return f"{value.item():.6g}"
        flat = value.detach().flatten().tolist()
        items = ", ".join(f"{v:.5g}" if isinstance(v, float) else str(v) for v in flat[:max_items])
        more = f", ... ({value.numel()} values)" if len(flat) > max_items else ""
        shape = "x".join(str(s) for s in value.shape)
        return f"[{items}{more}] (shape {shape})"
    if isinstance(value, float):
        return f"{value:.6g}"
    return repr(value)


def _describe_args(case: Case) -> str:
    parts = []
    for name, a in zip(case.arg_names, case.args):
        if isinstance(a, Tensor):
            parts.append(f"{name}: {a.dtype} tensor of shape {tuple(a.shape)}")
        else:
            parts.append(f"{name}={a!r}")
    return ", ".join(parts)


def _clone(a: Any) -> Any:
    return a.clone() if isinstance(a, Tensor) else a


def _fn_name(fn: Callable | str) -> str:
    """The student's function name (the grader passes the name itself: the function lives in another process)."""
    return fn if isinstance(fn, str) else getattr(fn, "__name__", repr(fn))


def _fail(check: Check, fn: Callable, case: Case, problem: str, details: Sequence[str] = (),
          hint: str | None = None) -> CheckFailure:
    lines = [f"check {check.name!r} failed for {_fn_name(fn)}: {problem}",
             f"  case: {case.label}",
             f"  inputs: {_describe_args(case)}"]
    lines += [f"  {d}" for d in details]
    hint = hint or case.hint or check.hint
    if hint:
        lines.append(f"  hint: {hint}")
    lines.append(f"  reference: {check.reference}   (signature: {check.signature})")
    return CheckFailure("\n".join(lines))


def _call(check: Check, fn: Callable, case: Case) -> Any:
    """Call the student's function on clones of the inputs; translate stubs and crashes into clear failures."""
    args = tuple(_clone(a) for a in case.args)
    try:
        got = fn(*args)
    except NotImplementedError as exc:
        raise not_implemented(check, fn, str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - any crash of student code becomes a readable failure
        raise _fail(check, fn, case, f"it raised {type(exc).__name__}: {exc}",
                    hint=case.hint or check.hint) from exc
    _inputs_untouched(check, fn, case, args)
    return got


def not_implemented(check: Check, fn: Callable | str, message: str = "") -> NotImplementedYet:
    """The failure for a stub that still raises NotImplementedError."""
    return NotImplementedYet(
        f"{_fn_name(fn)} is not implemented yet (check {check.name!r}): it raised NotImplementedError"
        f"{': ' + message if message else ''}.\n"
        f"  What to do: replace the `raise NotImplementedError(...)` line with your implementation of "
        f"{check.signature} ({check.teaches}), re-run that cell, then re-run this check.")


def _inputs_untouched(check: Check, fn: Callable | str, case: Case, args_after: Sequence) -> None:
    for name, before, after in zip(case.arg_names, case.args, args_after):
        if isinstance(before, Tensor) and not (isinstance(after, Tensor) and after.shape == before.shape
                                               and after.dtype == before.dtype and torch.equal(before, after)):
            raise _fail(check, fn, case, f"it modified its input {name!r} in place",
                        hint="work on new tensors (x * y, torch.cat, ...) instead of in-place ops (x[...] = , x.mul_()).")


def judge(name: str, fn: str, cases: Sequence[Case], outputs: Sequence, args_after: Sequence) -> int:
    """Verdict on values a function returned elsewhere (the isolated grader): raise CheckFailure or return #cases.

    ``outputs[i]`` and ``args_after[i]`` are what the call on ``cases[i].args`` returned and left in its
    arguments; the comparison is the same as :func:`run_check`'s.
    """
    spec = CHECKS[name]
    if len(outputs) != len(cases) or len(args_after) != len(cases):
        raise CheckFailure(f"check {name!r} for {fn}: {len(outputs)} results came back for {len(cases)} cases "
                           "(the result file was tampered with?)")
    for case, got, after in zip(cases, outputs, args_after):
        _inputs_untouched(spec, fn, case, after)
        if isinstance(got, dict) and "unsupported_type" in got:
            raise _fail(spec, fn, case, f"it returned a {got['unsupported_type']}, expected a tensor or a number")
        _compare(spec, fn, case, got)
    return len(cases)


def crash_failure(name: str, fn: str, case: Case | None, problem: str) -> CheckFailure:
    """A failure for code that raised (on ``case``) or never produced results (``case`` None)."""
    spec = CHECKS[name]
    if case is None:
        return CheckFailure(f"check {name!r} failed for {fn}: {problem}\n  reference: {spec.reference}   "
                            f"(signature: {spec.signature})")
    return _fail(spec, fn, case, problem, hint=case.hint or spec.hint)


def _compare(check: Check, fn: Callable, case: Case, got: Any) -> None:
    """Shape, dtype, finiteness, then values; the message points at the worst element."""
    expected = case.expected
    if not isinstance(expected, Tensor):
        expected = torch.as_tensor(expected, dtype=torch.float64)
    if not isinstance(got, Tensor):
        try:
            got = torch.as_tensor(got, dtype=expected.dtype)
        except (TypeError, ValueError, RuntimeError):
            raise _fail(check, fn, case, f"it returned {type(got).__name__}, expected a tensor of shape "
                        f"{tuple(expected.shape)}") from None
    if got.shape != expected.shape:
        hint = (case.diagnose(got) if case.diagnose else None)
        raise _fail(check, fn, case, f"wrong output shape {tuple(got.shape)}, expected {tuple(expected.shape)}",
                    hint=hint)
    if case.check_dtype and got.dtype != expected.dtype:
        raise _fail(check, fn, case, f"it returned {got.dtype} for {expected.dtype} inputs",
                    hint="keep the input dtype: build constants with dtype=x.dtype (or use Python floats), "
                         "never torch.tensor(...) without a dtype.")
    got64, exp64 = got.detach().double(), expected.detach().double()
    bad_nan = ~torch.isfinite(got64) & torch.isfinite(exp64)
    if bool(bad_nan.any()):
        idx = tuple(bad_nan.nonzero()[0].tolist())
        raise _fail(check, fn, case, f"non-finite output {got64[idx].item()} where {exp64[idx].item():.6g} "
                    "was expected", _item_details(case, idx, exp64, got64),
                    hint=(case.diagnose(got) if case.diagnose else None))
    tol = case.atol + case.rtol * exp64.abs()
    err = (got64 - exp64).abs()
    excess = torch.where(torch.isfinite(exp64), err - tol, torch.zeros_like(err))
    if bool((excess > 0).any()):
        idx = tuple(int(i) for i in torch.unravel_index(excess.argmax(), excess.shape)) if excess.dim() else ()
        n_bad = int((excess > 0).sum())
        raise _fail(check, fn, case, f"wrong values ({n_bad} of {excess.numel()} outside tolerance)",
                    _item_details(case, idx, exp64, got64)
                    + [f"tolerance: |got - expected| <= {case.atol:g} + {case.rtol:g} * |expected|"],
                    hint=(case.diagnose(got) if case.diagnose else None))


def _item_details(case: Case, idx: tuple, exp64: Tensor, got64: Tensor) -> list[str]:
    details = []
    batch = idx[:case.batch_ndim]
    if idx:
        details.append(f"worst element: output{list(idx)}")
        for name, a in zip(case.arg_names, case.args):
            if isinstance(a, Tensor) and a.dim() >= len(batch) and batch and \
                    tuple(a.shape[:len(batch)]) == tuple(exp64.shape[:len(batch)]):
                details.append(f"  {name}{list(batch)} = {_fmt(a[batch])}")
    if idx and case.batch_ndim < exp64.dim():
        details.append(f"expected output{list(batch)} = {_fmt(exp64[batch])}")
        details.append(f"got      output{list(batch)} = {_fmt(got64[batch])}")
    else:
        details.append(f"expected {_fmt(exp64[idx] if idx else exp64)}, got {_fmt(got64[idx] if idx else got64)}")
    return details


def _close(a: Tensor, b: Tensor, rel: float = 1e-3) -> bool:
    """Loose closeness used by the diagnosers (they recognise mistakes, they do not grade)."""
    if a.shape != b.shape:
        return False
    a, b = a.detach().double(), b.detach().double()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return False
    return bool(((a - b).abs() <= rel * (1.0 + b.abs())).all())


# --------------------------------------------------------------------------- geometry checks

def _expmap0_cases() -> Iterator[Case]:
    dim = 5
    for dtype in DTYPES:
        rtol, atol = _TOL[dtype]
        for c in CURVATURES:
            g = _generator("expmap0", int(c * 100))
            v64 = _tangents(16, dim, c, g, 0.01, 5.0)
            v = v64.to(dtype)
            expected = L.expmap0(v, c)

            def diagnose(got: Tensor, v=v, c=c, expected=expected) -> str | None:
                if got.shape == v.shape:
                    return ("return the point on the hyperboloid, shape (..., D+1) with the TIME coordinate "
                            "first: torch.cat([x_time, x_space], dim=-1).")
                if got.shape != expected.shape:
                    return None
                if _close(got[..., -1], expected[..., 0]):
                    return "your time coordinate is LAST; this course (and h2arn.lorentz) puts it FIRST."
                if _close(got[..., 1:], v):
                    return ("you returned the official code's direct lift (v as the space part); the exp map "
                            "scales v by sinh(sqrt(c)|v|) / (sqrt(c)|v|).")
                if not _close(got[..., 0], expected[..., 0]):
                    return "space part or time coordinate off: the time coordinate is sqrt(1/c + |x_space|^2)."
                return "check where sqrt(c) enters: x_space = sinh(sqrt(c)|v|) / (sqrt(c)|v|) * v."
            yield Case(f"random tangent vectors, {dtype}, c={c}, sqrt(c)|v| in [0.01, 5]", (v, c), ("v", "c"),
                       expected, rtol, atol, diagnose=diagnose)
        # any leading batch shape, and the zero vector
        g = _generator("expmap0", 1)
        v = _tangents(12, dim, 1.0, g, 0.01, 2.0).to(dtype).reshape(3, 4, dim)
        yield Case(f"leading batch shape (3, 4), {dtype}, c=1.0", (v, 1.0), ("v", "c"), L.expmap0(v, 1.0),
                   rtol, atol, batch_ndim=2,
                   hint="reduce over the last axis only: v.norm(dim=-1, keepdim=True).")
        v0 = torch.zeros(2, dim, dtype=dtype)
        yield Case(f"the zero vector, {dtype}, c=2.0 (must map to the origin (1/sqrt(c), 0, ...))", (v0, 2.0),
                   ("v", "c"), L.expmap0(v0, 2.0), rtol, atol,
                   hint="at v = 0, sinh(r)/r is 0/0 = NaN: use a Taylor expansion near 0, or clamp the norm "
                        "from below (norm.clamp_min(1e-15)), so the origin maps to the origin.")


def _logmap0_cases() -> Iterator[Case]:
    dim = 5
    for dtype in DTYPES:
        rtol, atol = _TOL[dtype]
        for c in CURVATURES:
            g = _generator("logmap0", int(c * 100))
            x = _points(16, dim, c, g, 0.01, 5.0).to(dtype)
            x = L.project(x, c)
            expected = L.logmap0(x, c)

            def diagnose(got: Tensor, x=x, c=c, expected=expected) -> str | None:
                if got.shape == x.shape:
                    return ("return the space-only tangent vector, shape (..., D): the time entry of a tangent "
                            "vector at the origin is 0 by definition, so drop it.")
                if got.shape != expected.shape:
                    return None
                ratio = (got.double() / expected.double()).nanmedian().item()
                if abs(ratio - math.sqrt(c)) < 1e-2 * math.sqrt(c) or abs(ratio - 1 / math.sqrt(c)) < 1e-2 / math.sqrt(c):
                    return f"off by a factor sqrt(c) = {math.sqrt(c):g}: v = asinh(sqrt(c)|x_s|) / (sqrt(c)|x_s|) * x_s."
                return "v = asinh(sqrt(c)|x_s|) / (sqrt(c)|x_s|) * x_s with x_s = x[..., 1:] (time coordinate first)."
            yield Case(f"random points, {dtype}, c={c}, distance to origin in [0.01, 5]", (x, c), ("x", "c"),
                       expected, rtol, atol, diagnose=diagnose)
        for c in (0.25, 4.0):
            g = _generator("logmap0-near", int(c * 100))
            x = L.project(_points(16, dim, c, g, 1e-6, 1e-3).to(dtype), c)
            expected = L.logmap0(x.double(), c).to(dtype)     # exact answer for these (rounded) inputs

            def diagnose_near(got: Tensor, x=x, c=c, expected=expected) -> str | None:
                if got.shape != expected.shape:
                    return None
                ratio = (got.double().norm(dim=-1) / expected.double().norm(dim=-1)).median().item()
                if not _close(got, expected, 1e-2) or abs(ratio - 1.0) > 1e-3:
                    return ("near the origin sqrt(c) x_0 = cosh(r) rounds to 1 (float32 keeps ~7 digits), so "
                            "arccosh(sqrt(c) x_0) is 0 or noise for radii below ~1e-3: the chapter's lesson. Get "
                            "the radius from the SPACE part instead: asinh(sqrt(c)|x_s|).")
                return None
            yield Case(f"points very near the origin, {dtype}, c={c}, distance to origin in [1e-6, 1e-3] "
                       "(relative tolerance 1e-3)", (x, c), ("x", "c"), expected, 1e-3, 0.0, diagnose=diagnose_near)
        o = L.origin(4, 0.5, dtype=dtype).expand(2, 5).clone()
        yield Case(f"the origin, {dtype}, c=0.5 (must map to the zero vector)", (o, 0.5), ("x", "c"),
                   L.logmap0(o, 0.5), rtol, atol,
                   hint="at the origin asinh(r)/r is 0/0 = NaN: use a Taylor expansion near 0 or clamp the norm.")


def _dist_cases() -> Iterator[Case]:
    dim = 4
    for dtype in DTYPES:
        rtol, atol = _TOL[dtype]
        if dtype == torch.float32:
            rtol, atol = 1e-3, 1e-4   # accepts acosh(-c<x,y>)/sqrt(c) computed in float32
        for c in CURVATURES:
            g = _generator("dist", int(c * 100))
            x64, y64 = _points(64, dim, c, g, 0.0, 3.0), _points(64, dim, c, g, 0.0, 3.0)
            keep = L.dist(x64, y64, c) > 0.1 / math.sqrt(c)
            x, y = L.project(x64[keep][:16].to(dtype), c), L.project(y64[keep][:16].to(dtype), c)
            expected = L.dist(x, y, c)

            def diagnose(got: Tensor, c=c, expected=expected) -> str | None:
                if got.shape != expected.shape:
                    return ("return one distance per pair: shape (...) (reduce the last axis), "
                            "not (..., 1) and not a matrix.")
                ratio = (got.double() / expected.double()).median().item()
                s = math.sqrt(c)
                if c != 1.0 and abs(ratio - s) < 1e-2 * s:
                    return (f"your distances are sqrt(c) = {s:g} times the right ones (too {_size_word(s)} at "
                            f"c={c:g}): d = acosh(-c <x,y>_L) / sqrt(c) -- the 1/sqrt(c) is missing.")
                if c != 1.0 and abs(ratio - 1 / s) < 1e-2 / s:
                    return (f"your distances are 1/sqrt(c) = {1 / s:g} times the right ones (too "
                            f"{_size_word(1 / s)} at c={c:g}): divide acosh(-c <x,y>_L) by sqrt(c) once, not by c.")
                if abs(ratio - 2.0) < 2e-2 or abs(ratio - 0.5) < 5e-3:
                    return "off by a factor 2: acosh(-c<x,y>_L)/sqrt(c) equals 2/sqrt(c) * asinh(sqrt(c)/2 * chord)."
                return ("d = acosh(-c <x,y>_L) / sqrt(c), with <x,y>_L = -x_0 y_0 + sum_i x_i y_i "
                        "(time coordinate first, minus sign on the time part).")
            yield Case(f"random pairs, {dtype}, c={c}, distances > 0.1/sqrt(c)", (x, y, c), ("x", "y", "c"),
                       expected, rtol, atol, diagnose=diagnose)
        for c in (0.25, 1.0, 4.0):
            g = _generator("dist-near", int(c * 100))
            x64 = _points(16, dim, c, g, 0.5, 2.0)
            gap = 1e-4 + 3e-3 * torch.rand(16, 1, generator=g, dtype=torch.float64)
            if dtype == torch.float64:
                gap = gap * 1e-3                                          # float64: pairs 1e-7 .. 3e-6 apart
            w = torch.randn(16, dim + 1, generator=g, dtype=torch.float64)
            u = w + c * L.inner(x64, w, keepdim=True) * x64               # tangent at x
            y64 = L.expmap(x64, u / L.tangent_norm(u, keepdim=True) * gap, c)   # d(x, y) = gap
            x, y = L.project(x64.to(dtype), c), L.project(y64.to(dtype), c)
            expected = L.dist(x.double(), y.double(), c).to(dtype)         # exact for these (rounded) inputs
            near_tol = 1e-2 if dtype == torch.float32 else 1e-4

            def diagnose_near(got: Tensor, expected=expected) -> str | None:
                if got.shape != expected.shape:
                    return None
                return ("for NEAR pairs -c<x,y>_L = cosh(sqrt(c) d) is 1 + (tiny), and the products x_0 y_0 - "
                        "x_s.y_s cancel to a few correct digits: acosh then returns 0 or noise (section 5 of the "
                        "chapter). Use the chord form for near pairs: it works with x - y, which is exact.")
            yield Case(f"NEAR pairs, {dtype}, c={c}, points 0.5..2 from the origin and "
                       f"{'1e-4..3e-3' if dtype == torch.float32 else '1e-7..3e-6'} apart (relative tolerance "
                       f"{near_tol:g})", (x, y, c), ("x", "y", "c"), expected, near_tol, 0.0, diagnose=diagnose_near)
        g = _generator("dist", 7)
        x = L.project(_points(8, dim, 1.0, g, 0.0, 2.0).to(dtype), 1.0)
        loose = 2e-2 if dtype == torch.float32 else 2e-6
        yield Case(f"a point and itself, {dtype}, c=1.0 (distance 0, tolerance {loose:g})", (x, x.clone(), 1.0),
                   ("x", "y", "c"), torch.zeros(8, dtype=dtype), 0.0, loose,
                   hint="-c<x,x>_L is 1 only up to rounding; acosh of 0.9999999 is NaN: clamp the argument "
                        "to >= 1 (or use the chord form 2/sqrt(c) asinh(sqrt(c)/2 |x-y|_L)).")


def _size_word(factor: float) -> str:
    """'small' when multiplying by ``factor`` shrinks a distance, 'large' when it grows it."""
    return "small" if factor < 1.0 else "large"


def _cone_points(name: str, n: int, dim: int, c: float, K: float, dtype: torch.dtype, inside: bool) -> Tensor:
    """Points outside (inside=False) or inside the saturation ball |x_s| <= 2K/sqrt(c), well away from its edge."""
    g = _generator(name, int(c * 100) + int(K * 1000) + (1 if inside else 0))
    r_sat = 2.0 * K / math.sqrt(c)                                   # space norm where asin's argument is 1
    if inside:
        space_norm = r_sat * (0.1 + 0.85 * torch.rand(n, 1, generator=g, dtype=torch.float64))
    else:
        space_norm = r_sat * (1.05 + 20.0 * torch.rand(n, 1, generator=g, dtype=torch.float64))
    return L.lift((_directions(n, dim, g) * space_norm).to(dtype), c)


def _half_aperture_cases() -> Iterator[Case]:
    dim = 4
    for dtype in DTYPES:
        rtol, atol = _TOL[dtype]
        if dtype == torch.float32:
            rtol, atol = 1e-3, 2e-4
        for c in CURVATURES:
            for K in (0.1, 0.5):
                x = _cone_points("half_aperture", 16, dim, c, K, dtype, inside=False)
                expected = L.half_aperture(x, c, K)

                def diagnose(got: Tensor, c=c, K=K, expected=expected, x=x) -> str | None:
                    if got.shape != expected.shape:
                        return "return one angle per point: shape (...)."
                    norm = x[..., 1:].double().norm(dim=-1)
                    if _close(got, torch.asin((2 * K / norm).clamp(max=1.0))):
                        return "the curvature is missing: asin(2K / (sqrt(c) |x_space|))."
                    if _close(got, torch.asin((2 * K / (c * norm)).clamp(max=1.0))):
                        return "use sqrt(c), not c: asin(2K / (sqrt(c) |x_space|))."
                    return "half-aperture = asin(2K / (sqrt(c) |x_space|)) with x_space = x[..., 1:]."
                yield Case(f"points outside the saturation ball, {dtype}, c={c}, K={K}", (x, c, K),
                           ("x", "c", "K"), expected, rtol, atol, diagnose=diagnose)
        x = _cone_points("half_aperture", 8, dim, 1.0, 0.1, dtype, inside=True)
        yield Case(f"points inside the ball |x_s| <= 2K/sqrt(c), {dtype}, c=1.0, K=0.1: the aperture saturates "
                   "at pi/2 (any clamp within 2e-3 of pi/2 is accepted)", (x, 1.0, 0.1), ("x", "c", "K"),
                   L.half_aperture(x, 1.0, 0.1), 0.0, 2e-3,
                   hint="asin's argument 2K/(sqrt(c)|x_s|) exceeds 1 near the origin: clamp it to at most "
                        "1 - eps (MERU uses 1 - 1e-7; h2arn.lorentz.eps(dtype) is dtype-aware).")


def _exterior_angle_cases() -> Iterator[Case]:
    dim = 4
    for dtype in DTYPES:
        rtol, atol = (1e-3, 5e-4) if dtype == torch.float32 else (1e-7, 1e-8)
        for c in CURVATURES:
            g = _generator("exterior_angle", int(c * 100))
            x64, y64 = _points(128, dim, c, g, 0.3, 2.5), _points(128, dim, c, g, 0.3, 2.5)
            ang = L.exterior_angle(x64, y64, c)
            keep = (ang > 0.1) & (ang < math.pi - 0.1) & (L.dist(x64, y64, c) > 0.3 / math.sqrt(c))
            x, y = L.project(x64[keep][:16].to(dtype), c), L.project(y64[keep][:16].to(dtype), c)
            expected = L.exterior_angle(x, y, c)

            def diagnose(got: Tensor, x=x, y=y, c=c, expected=expected) -> str | None:
                if got.shape != expected.shape:
                    return "return one angle per pair: shape (...)."
                swapped = L.exterior_angle(y, x, c)
                if _close(got, swapped):
                    return "arguments swapped: the angle is measured at x (the cone's apex), between the ray O->x extended and the geodesic x->y."
                if _close(got, math.pi - expected):
                    return ("you computed the interior angle at x (pi - exterior): the exterior angle is measured "
                            "from the ray O->x EXTENDED beyond x, i.e. from the tangent pointing AWAY from the "
                            "origin; one sign in your numerator is flipped.")
                return ("follow the derivation in section 6: cos(theta) = <-u_O, u_y>_L / (|u_O| |u_y|) with u_y, "
                        "u_O the tangents at x towards y and towards the origin; check the time coordinate is "
                        "first and which norms the denominator needs.")
            yield Case(f"random pairs, {dtype}, c={c}, angles in [0.1, pi-0.1]", (x, y, c), ("x", "y", "c"),
                       expected, rtol, atol, diagnose=diagnose)
        g = _generator("exterior_angle", 3)
        v = _tangents(8, dim, 1.0, g, 0.3, 1.5)
        x, y = L.expmap0(v.to(dtype), 1.0), L.expmap0((2.0 * v).to(dtype), 1.0)
        loose = 5e-2 if dtype == torch.float32 else 1e-3
        yield Case(f"y on the ray from the origin through x, beyond x, {dtype}, c=1.0: angle 0 (tolerance "
                   f"{loose:g}, the clamped acos is not exactly 0)", (x, y, 1.0), ("x", "y", "c"),
                   L.exterior_angle(x, y, 1.0), 0.0, loose,
                   hint="acos's argument reaches 1 (and exceeds it through rounding) on the ray: clamp it to "
                        "[-1 + eps, 1 - eps], and clamp (c<x,y>_L)^2 - 1 at a small positive value.")


# --------------------------------------------------------------------------- model checks

def _contribution_cases() -> Iterator[Case]:
    from h2arn.aggregation import contribution_weights
    B, Lt, D = 4, 7, 6
    for dtype in DTYPES:
        rtol, atol = (1e-3, 1e-5) if dtype == torch.float32 else (1e-6, 1e-9)
        for c in CURVATURES:
            for temperature in (0.07, 0.5):
                g = _generator("contribution_weights", int(c * 100) + int(temperature * 1000))
                z = (torch.randn(B, Lt, D, generator=g, dtype=torch.float64) * 0.4 / math.sqrt(c))
                lengths = torch.tensor([Lt, 1, 3, 5])
                mask = torch.arange(Lt).unsqueeze(0) < lengths.unsqueeze(1)
                z = torch.where(mask.unsqueeze(-1), z, torch.full_like(z, 3.0)).to(dtype)  # padding holds junk
                expected = contribution_weights(z, mask, c, temperature, lift="expmap")

                def diagnose(got: Tensor, z=z, mask=mask, c=c, t=temperature) -> str | None:
                    if got.shape != mask.shape:
                        return "return one weight per token: shape (B, L), the same as the mask."
                    if bool((got.double().abs() > 0)[~mask].any()):
                        return "padding tokens (mask False) must get weight exactly 0: fill their logits with -inf before the softmax."
                    if not _close(got.double().sum(-1), torch.ones(got.shape[0], dtype=torch.float64)):
                        return "each row must sum to 1 over the VALID tokens (softmax along the token axis, dim=-1)."
                    d_all = L.dist(L.expmap0(z, c), L.expmap0(z.mean(dim=-2), c).unsqueeze(-2), c)
                    if _close(got, torch.softmax((-d_all / t).masked_fill(~mask, float("-inf")), dim=-1)):
                        return ("your anchor includes the padding tokens: it is the mean over VALID tokens only, "
                                "(z * mask[..., None]).sum(-2) / mask.sum(-1, keepdim=True).")
                    if _close(got, contribution_weights(z, mask, c, t, lift="official")):
                        return ("you used the official code's direct lift (L.lift); this exercise uses the exp "
                                "map of the paper's Eq. 5 (L.expmap0) for tokens and anchor.")
                    if _close(got, contribution_weights(z, mask, c, -t, lift="expmap")):
                        return "sign: weights are softmax(-d / T): tokens CLOSE to the anchor get the large weights."
                    return ("w = softmax over valid tokens of -d(expmap0(z_i), expmap0(anchor)) / T; use L.dist "
                            "(the acosh form loses precision for tokens near the anchor in float32).")
                yield Case(f"tokens (B={B}, L={Lt}, D={D}) with padding (lengths {lengths.tolist()}), {dtype}, "
                           f"c={c}, T={temperature}", (z, mask, c, temperature), ("z", "mask", "c", "temperature"),
                           expected, rtol, atol, diagnose=diagnose)


def _contrastive_cases() -> Iterator[Case]:
    from h2arn.losses import multi_positive_contrastive
    for dtype in DTYPES:
        rtol, atol = (1e-5, 1e-6) if dtype == torch.float32 else (1e-10, 1e-12)
        for salt, (B, shapes) in enumerate([(6, [0, 1, 2, 3, 4, 5]), (8, [0, 0, 1, 2, 2, 2, 3, 4]),
                                           (5, [3, 1, 3, 0, 1])]):
            g = _generator("contrastive_loss", salt)
            logits = (torch.randn(B, B, generator=g, dtype=torch.float64) * 3.0).to(dtype)
            ids = torch.tensor(shapes)
            pos_mask = ids.unsqueeze(0) == ids.unsqueeze(1)
            expected = multi_positive_contrastive(logits, pos_mask)

            def diagnose(got: Tensor, logits=logits, pos_mask=pos_mask, expected=expected) -> str | None:
                if got.dim() != 0:
                    return "return a scalar: the mean over rows (and the average of the two directions)."
                lse = torch.logsumexp
                neg = torch.full_like(logits, float("-inf"))
                t2p = (lse(logits, 1) - lse(torch.where(pos_mask, logits, neg), 1)).mean()
                p2t = (lse(logits.T, 1) - lse(torch.where(pos_mask.T, logits.T, neg), 1)).mean()
                diag = torch.eye(len(logits), dtype=torch.bool)
                one_pos = 0.5 * ((lse(logits, 1) - logits.diagonal()).mean() + (lse(logits.T, 1) - logits.diagonal()).mean())
                if _close(got, t2p) or _close(got, p2t):
                    return "only one direction: the loss is 1/2 (text->3D + 3D->text), the second on logits.T."
                if not bool(pos_mask.equal(diag)) and _close(got, one_pos):
                    return ("only the diagonal is positive in your loss; several captions of the same shape share a "
                            "batch, so every column with pos_mask True is a positive: -log(sum_pos exp / sum_all exp).")
                if _close(got, t2p + p2t):
                    return "average the two directions (1/2 of the sum), do not add them."
                return ("per row: logsumexp(all logits) - logsumexp(positive logits); mean over rows; "
                        "then average the text->3D and 3D->text terms.")
            yield Case(f"batch of {B} captions, shape ids {shapes}, {dtype}", (logits, pos_mask),
                       ("logits", "pos_mask"), expected, rtol, atol, batch_ndim=0, diagnose=diagnose)


def _recall_cases() -> Iterator[Case]:
    from h2arn.evaluate import ranks_text_to_cloud

    def recall_at_k(sim: Tensor, txt_to_pc: Tensor, k: int) -> float:
        return float(100.0 * (ranks_text_to_cloud(sim, txt_to_pc) <= k).double().mean())
    for salt, (n_txt, n_pc, quantize) in enumerate([(20, 8, None), (30, 10, 4), (12, 12, 2)]):
        g = _generator("recall_at_k", salt)
        sim = torch.randn(n_txt, n_pc, generator=g, dtype=torch.float64)
        txt_to_pc = torch.randint(0, n_pc, (n_txt,), generator=g)
        # make the right answer likely enough that recall varies with k
        sim[torch.arange(n_txt), txt_to_pc] += 1.0
        label = "continuous similarities"
        if quantize is not None:
            sim = torch.round(sim * quantize) / quantize
            label = f"similarities rounded to 1/{quantize} (ties: a tie counts in favour of the target)"
        for k in (1, 5):
            expected = torch.tensor(recall_at_k(sim, txt_to_pc, k), dtype=torch.float64)

            def diagnose(got: Tensor, sim=sim, txt_to_pc=txt_to_pc, k=k, expected=expected) -> str | None:
                target = sim[torch.arange(len(txt_to_pc)), txt_to_pc].unsqueeze(1)
                strict = 100.0 * float(((sim >= target).sum(1) <= k).double().mean())
                if abs(float(got) - expected.item() / 100.0) < 1e-9 and expected.item() != 0:
                    return "return a percentage (0..100), not a fraction."
                if abs(float(got) - strict) < 1e-9 and strict != expected.item():
                    return ("ties: rank = 1 + #{clouds with similarity STRICTLY greater than the target's}; "
                            "a tie counts in favour of the target (the official protocol).")
                return ("rank of the target cloud in each text's row (higher similarity = better), R@K = 100 * "
                        "fraction of texts whose target has rank <= K.")
            yield Case(f"{n_txt} texts x {n_pc} clouds, {label}, k={k}", (sim, txt_to_pc, k),
                       ("sim", "txt_to_pc", "k"), expected, 0.0, 1e-9, batch_ndim=0, diagnose=diagnose,
                       check_dtype=False)


# --------------------------------------------------------------------------- chapter 02: reconstruction MAP

def _random_tree_related(n: int, g: torch.Generator) -> Tensor:
    """``(n, n)`` bool ancestor-or-descendant relation of a random rooted tree (node 0 the root)."""
    parent = [-1] + [int(torch.randint(0, i, (1,), generator=g)) for i in range(1, n)]
    rel = torch.zeros(n, n, dtype=torch.bool)
    for v in range(n):
        u = parent[v]
        while u >= 0:
            rel[u, v] = True
            u = parent[u]
    return rel | rel.T


def _ranking_map_cases() -> Iterator[Case]:
    from h2arn.data.hierarchy import mean_average_precision
    for dtype in DTYPES:
        for salt, (n, dim, isolated) in enumerate([(12, 2, False), (20, 3, False), (15, 2, True)]):
            g = _generator("ranking_map", salt)
            related = _random_tree_related(n, g)
            if isolated:                                   # a node with no relatives: it has no AP, skip it
                related[:, n - 1] = False
                related[n - 1, :] = False
            pts = torch.randn(n, dim, generator=g, dtype=torch.float64)
            dist = torch.cdist(pts, pts).to(dtype)
            expected = torch.tensor(mean_average_precision(dist.double().numpy(), related.numpy()), dtype=torch.float64)

            def diagnose(got: Tensor, dist=dist, related=related, expected=expected) -> str | None:
                d = dist.double()
                n_ = len(d)
                naive = []
                for u in range(n_):
                    rel = related[u].clone()
                    if not bool(rel.any()):
                        continue
                    order = torch.argsort(d[u])                   # includes u itself at rank 1
                    ranks = torch.nonzero(rel[order]).flatten().double() + 1
                    naive.append(float((torch.arange(1, len(ranks) + 1) / ranks).mean()))
                if naive and abs(float(got) - sum(naive) / len(naive)) < 1e-9:
                    return ("the query node itself is in your ranking (distance 0, rank 1): rank only the OTHER "
                            "nodes (set d[u, u] = inf or drop it).")
                return ("per node u with at least one relative: sort the other nodes by distance; AP(u) = mean "
                        "over u's relatives v of (relatives ranked at or above v) / (rank of v); MAP = mean of "
                        "AP(u); nodes without relatives are skipped.")
            yield Case(f"{n} nodes of a random tree embedded in R^{dim}{', one node without relatives' if isolated else ''}, "
                       f"{dtype}", (dist, related), ("dist", "related"), expected, 0.0, 1e-9, batch_ndim=0,
                       diagnose=diagnose, check_dtype=False)


# --------------------------------------------------------------------------- chapter 04: spatial token pooling

def _spatial_pooling_cases() -> Iterator[Case]:
    from h2arn.encoders.tokens import pool_tokens
    for dtype in DTYPES:
        for salt, (B, N, D, T) in enumerate([(2, 64, 5, 8), (3, 40, 4, 5), (1, 30, 3, 30)]):
            g = _generator("spatial_pooling", salt)
            xyz = torch.rand(B, N, 3, generator=g, dtype=torch.float64).to(dtype)
            feats = torch.randn(B, N, D, generator=g, dtype=torch.float64).to(dtype)
            expected = pool_tokens(feats, xyz, T, "spatial")[0]

            def diagnose(got: Tensor, feats=feats, xyz=xyz, T=T, expected=expected) -> str | None:
                if got.shape != expected.shape:
                    return f"return one token per centroid: shape (B, num_tokens, D) = {tuple(expected.shape)}."
                if _close(got, pool_tokens(feats, xyz, T, "index")[0]):
                    return ("you pooled consecutive runs of the point ORDER (the official AdaptiveMaxPool1d): a "
                            "spatial token pools the points nearest to one FPS centroid.")
                return ("centroids = farthest_point_sample(xyz, T); every point joins its NEAREST centroid "
                        "(torch.cdist(...).argmin(-1)); token t = max over its group's features (max, not mean).")
            yield Case(f"{B} clouds of {N} points, D={D} features, {T} tokens{' (as many tokens as points)' if T == N else ''}, "
                       f"{dtype}", (feats, xyz, T), ("feats", "xyz", "num_tokens"), expected, 0.0, 0.0,
                       batch_ndim=2, diagnose=diagnose)


# --------------------------------------------------------------------------- chapter 05: entailment-cone loss

def _cone_loss_cases() -> Iterator[Case]:
    from h2arn.losses import entailment_cone_loss
    dim = 3
    for dtype in DTYPES:
        rtol, atol = (1e-4, 1e-6) if dtype == torch.float32 else (1e-9, 1e-12)
        for c in CURVATURES:
            for K in (0.1, 0.5):
                g = _generator("cone_loss", int(c * 100) + int(K * 1000))
                shapes = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4])
                n_shapes = int(shapes.max()) + 1
                text_v = _tangents(len(shapes), dim, c, g, 0.2, 2.0)
                cloud_v = _tangents(n_shapes, dim, c, g, 0.5, 3.0)
                # half the clouds sit near the ray of one of their captions (inside its cone), half anywhere
                first = torch.tensor([int((shapes == s).nonzero()[0]) for s in range(n_shapes)])
                along = 1.6 * text_v[first] + 0.02 * torch.randn(n_shapes, dim, generator=g, dtype=torch.float64)
                cloud_v = torch.where((torch.arange(n_shapes) % 2 == 0).unsqueeze(1), along, cloud_v)
                text, cloud = L.expmap0(text_v, c).to(dtype), L.expmap0(cloud_v, c).to(dtype)
                text, cloud = L.project(text, c), L.project(cloud, c)
                pos = shapes.unsqueeze(1) == torch.arange(n_shapes).unsqueeze(0)       # (texts, clouds)
                expected = entailment_cone_loss(text, cloud, pos, c, K)[0]

                def diagnose(got: Tensor, text=text, cloud=cloud, pos=pos, c=c, K=K) -> str | None:
                    if got.dim() != 0:
                        return "return a scalar: the mean over the positive (caption, cloud) pairs."
                    ext = L.pairwise_exterior_angle(text, cloud, c)
                    hinge = torch.relu(ext - L.half_aperture(text, c, K).unsqueeze(1))
                    if _close(got, hinge.mean()) or _close(got, (hinge * pos).mean()):
                        return "average over the POSITIVE pairs only (pos_mask True), not over all B x B pairs."
                    if _close(got, (hinge * pos).sum()):
                        return "average over the positive pairs (divide by their number), do not sum."
                    if _close(got, ((ext - L.half_aperture(text, c, K).unsqueeze(1))[pos]).mean()):
                        return "the hinge is missing: relu(exterior angle - half-aperture); a cloud inside the cone costs 0."
                    swapped = torch.relu(L.pairwise_exterior_angle(cloud, text, c)
                                         - L.half_aperture(cloud, c, K).unsqueeze(1)).T[pos].mean()
                    if _close(got, swapped):
                        return "the TEXT is the apex: exterior_angle(text, cloud) and half_aperture(text), not the cloud's."
                    return ("mean over positive pairs (i, j) of relu(exterior_angle(t_i, p_j) - half_aperture(t_i, K)).")
                yield Case(f"{len(shapes)} captions of {n_shapes} clouds (shape ids {shapes.tolist()}), {dtype}, "
                           f"c={c}, K={K}", (text, cloud, pos, c, K), ("text_emb", "cloud_emb", "pos_mask", "c", "K"),
                           expected, rtol, atol, batch_ndim=0, diagnose=diagnose)


# --------------------------------------------------------------------------- chapter 06: the LR schedule

def _lr_schedule_cases() -> Iterator[Case]:
    from h2arn.train import WarmupLinearDecay
    for total, warmup in [(1000, 100), (50, 0), (30, 7)]:
        ref = WarmupLinearDecay(total, warmup)
        steps = sorted({0, 1, warmup // 2, max(warmup - 1, 0), warmup, warmup + 1, (warmup + total) // 2,
                        total - 1, total, total + 5})
        for step in steps:
            expected = torch.tensor(ref(step), dtype=torch.float64)

            def diagnose(got: Tensor, step=step, total=total, warmup=warmup) -> str | None:
                g = float(got)
                if step < warmup and abs(g - (step + 1) / warmup) < 1e-9:
                    return "warm-up starts at 0 at step 0: multiplier = step / warmup_steps (not (step + 1) / ...)."
                if step >= total and g < 0:
                    return "after total_steps the multiplier stays at 0: clamp it with max(0.0, ...)."
                if step >= warmup and abs(g - (total - step) / total) < 1e-9 and warmup > 0:
                    return ("the decay runs from 1 at the END of warm-up to 0 at total_steps: divide by "
                            "(total_steps - warmup_steps), not by total_steps.")
                return ("0 -> 1 linearly over warmup_steps (step / warmup_steps), then 1 -> 0 linearly at "
                        "total_steps, never below 0; warmup_steps = 0 means no warm-up.")
            yield Case(f"step {step} of total_steps={total}, warmup_steps={warmup}", (step, total, warmup),
                       ("step", "total_steps", "warmup_steps"), expected, 0.0, 1e-12, batch_ndim=0,
                       diagnose=diagnose, check_dtype=False)


# --------------------------------------------------------------------------- chapter 07: hierarchy-aware mAP

def reference_hierarchical_map(sim: Tensor, txt_level: Tensor, txt_label: Tensor, pc_labels: Tensor) -> float:
    """Graded-relevance text->3D mAP in percent (the self-contained reference of check ``hierarchical_map``).

    A caption at level l with label y (its shape's node at level l of the taxonomy) is satisfied by every
    shape whose level-l node is y: ``relevant[t, p] = pc_labels[p, txt_level[t]] == txt_label[t]``.
    AP(t) = mean over the relevant shapes p of precision at p's rank (rank by descending similarity);
    mAP = 100 * mean over captions. Ties are not handled (the check's similarities have none).
    """
    sim = sim.double()
    relevant = pc_labels.long()[:, txt_level.long()].T == txt_label.long().unsqueeze(1)   # (N_txt, N_pc)
    order = torch.argsort(sim, dim=1, descending=True)
    hits = torch.gather(relevant, 1, order).double()
    precision = hits.cumsum(1) / torch.arange(1, sim.shape[1] + 1, dtype=torch.float64)
    ap = (precision * hits).sum(1) / hits.sum(1)
    return float(100.0 * ap.mean())


def _hierarchy_labels(n_pc: int, g: torch.Generator) -> Tensor:
    """``(n_pc, 4)`` taxonomy labels: level 0 super-category (2), 1 category (4), 2 sub-category (8), 3 the shape."""
    sub = torch.randint(0, 8, (n_pc,), generator=g)
    return torch.stack([sub // 4, sub // 2, sub, torch.arange(n_pc)], dim=1)


def _hierarchical_map_cases() -> Iterator[Case]:
    for dtype in DTYPES:
        for salt, (n_pc, n_txt) in enumerate([(10, 25), (16, 40)]):
            g = _generator("hierarchical_map", salt)
            pc_labels = _hierarchy_labels(n_pc, g)
            txt_to_pc = torch.randint(0, n_pc, (n_txt,), generator=g)
            txt_level = torch.randint(0, 4, (n_txt,), generator=g)
            txt_label = pc_labels[txt_to_pc, txt_level]
            sim = torch.randn(n_txt, n_pc, generator=g, dtype=torch.float64)
            sim = (sim + 1.5 * (pc_labels[:, txt_level].T == txt_label.unsqueeze(1)).double()).to(dtype)
            expected = torch.tensor(reference_hierarchical_map(sim, txt_level, txt_label, pc_labels), dtype=torch.float64)

            def diagnose(got: Tensor, sim=sim, txt_level=txt_level, txt_label=txt_label, pc_labels=pc_labels,
                         expected=expected) -> str | None:
                g_ = float(got)
                if abs(g_ - expected.item() / 100.0) < 1e-9:
                    return "return a percentage (0..100), not a fraction."
                relevant = pc_labels[:, txt_level].T == txt_label.unsqueeze(1)
                hits = relevant.gather(1, torch.argsort(sim.double(), dim=1, descending=True)).double()
                precision = hits.cumsum(1) / torch.arange(1, sim.shape[1] + 1, dtype=torch.float64)
                if abs(g_ - 100.0 * float(((precision * hits).sum(1) / sim.shape[1]).mean())) < 1e-9:
                    return ("AP(t) averages the precision over the RELEVANT shapes: divide by their number, not by "
                            "the number of shapes.")
                if abs(g_ - 100.0 * float(precision.mean())) < 1e-9:
                    return "average the precision only at the ranks of relevant shapes, not at every rank."
                return ("relevant[t, p] = pc_labels[p, txt_level[t]] == txt_label[t]; AP(t) = mean over relevant p of "
                        "(relevant shapes ranked at or above p) / (rank of p); mAP = 100 * mean over captions.")
            yield Case(f"{n_txt} captions at levels 0-3 x {n_pc} shapes (labels of 2 / 4 / 8 / {n_pc} nodes per level), "
                       f"{dtype}", (sim, txt_level, txt_label, pc_labels), ("sim", "txt_level", "txt_label", "pc_labels"),
                       expected, 0.0, 1e-9, batch_ndim=0, diagnose=diagnose, check_dtype=False)


# --------------------------------------------------------------------------- chapter 08: inside the cone?

def _in_cone_cases() -> Iterator[Case]:
    dim = 3
    for dtype in DTYPES:
        for c in CURVATURES:
            for K in (0.1, 0.5):
                g = _generator("in_cone", int(c * 100) + int(K * 1000))
                text_v = _tangents(96, dim, c, g, 0.05, 2.0)
                cloud_v = torch.where((torch.arange(96) % 2 == 0).unsqueeze(1),
                                      (1.2 + torch.rand(96, 1, generator=g, dtype=torch.float64)) * text_v
                                      + 0.08 / math.sqrt(c) * torch.randn(96, dim, generator=g, dtype=torch.float64),
                                      _tangents(96, dim, c, g, 0.5, 3.0))
                text, cloud = L.expmap0(text_v, c), L.expmap0(cloud_v, c)
                margin = L.half_aperture(text, c, K) - L.exterior_angle(text, cloud, c)
                keep = margin.abs() > 1e-3                            # away from the cone's border
                text, cloud = L.project(text[keep][:24].to(dtype), c), L.project(cloud[keep][:24].to(dtype), c)
                expected = L.exterior_angle(text, cloud, c) <= L.half_aperture(text, c, K)

                def diagnose(got: Tensor, text=text, cloud=cloud, c=c, K=K, expected=expected) -> str | None:
                    if got.shape != expected.shape:
                        return "return one True/False per (text, cloud) pair: shape (...)."
                    if _close(got.double(), (~expected).double()):
                        return "inverted: a cloud is INSIDE when its exterior angle is at most the half-aperture."
                    swapped = L.exterior_angle(cloud, text, c) <= L.half_aperture(cloud, c, K)
                    if _close(got.double(), swapped.double()):
                        return "the TEXT is the apex: measure the angle at the text and use the text's aperture."
                    return "inside = exterior_angle(text, cloud) <= half_aperture(text, K) (L.exterior_angle, L.half_aperture)."
                share = float(expected.double().mean())
                yield Case(f"{len(text)} (text, cloud) pairs, {dtype}, c={c}, K={K} ({share:.0%} inside, none within "
                           "1e-3 rad of the border)", (text, cloud, c, K), ("text", "cloud", "c", "K"), expected,
                           0.0, 0.0, diagnose=diagnose, check_dtype=False)


# --------------------------------------------------------------------------- chapter 09: Lorentz -> MIPS

def reference_mips_points(x: Tensor, phi_sq: float) -> Tensor:
    """Stored vectors of the MIPS augmentation (:mod:`h2arn.index`, ``transform="augment"``):
    ``x' = (x, sqrt(Phi^2 - |x|^2))``, ``(N, D+1) -> (N, D+2)``, all on the sphere of radius Phi."""
    extra = (phi_sq - (x * x).sum(-1, keepdim=True)).clamp_min(0.0).sqrt()
    return torch.cat([x, extra], dim=-1)


def reference_mips_queries(q: Tensor) -> Tensor:
    """Query vectors: time coordinate negated and a trailing 0, so ``q' . x' = <q, x>_L`` exactly."""
    return torch.cat([-q[..., :1], q[..., 1:], torch.zeros_like(q[..., :1])], dim=-1)


def _mips_points_cases() -> Iterator[Case]:
    dim = 4
    for dtype in DTYPES:
        rtol, atol = _TOL[dtype]
        for c in CURVATURES:
            g = _generator("mips_points", int(c * 100))
            x = L.project(_points(12, dim, c, g, 0.1, 2.5).to(dtype), c)
            phi_sq = float((x.double() * x.double()).sum(-1).max()) * 1.5
            expected = reference_mips_points(x, phi_sq)

            def diagnose(got: Tensor, x=x, phi_sq=phi_sq, expected=expected) -> str | None:
                if got.shape != expected.shape:
                    return "keep every coordinate of x and append ONE extra coordinate: shape (N, D+2)."
                if _close(got[..., -1], phi_sq - (x.double() ** 2).sum(-1)):
                    return "the extra coordinate is the SQUARE ROOT of Phi^2 - |x|^2 (so that |x'|^2 = Phi^2)."
                if _close(got[..., 0], -x[..., 0]):
                    return "stored points keep their time coordinate; only the QUERIES get it negated."
                return "x' = (x, sqrt(Phi^2 - |x|^2)) with the ordinary Euclidean |x|^2 (time coordinate included)."
            yield Case(f"points at distance 0.1..2.5 from the origin, {dtype}, c={c}, Phi^2 = 1.5 max |x|^2",
                       (x, phi_sq), ("x", "phi_sq"), expected, rtol, atol, diagnose=diagnose)


def _mips_queries_cases() -> Iterator[Case]:
    dim = 4
    for dtype in DTYPES:
        for c in CURVATURES:
            g = _generator("mips_queries", int(c * 100))
            q = L.project(_points(12, dim, c, g, 0.1, 2.5).to(dtype), c)
            expected = reference_mips_queries(q)

            def diagnose(got: Tensor, q=q, expected=expected) -> str | None:
                if got.shape != expected.shape:
                    return "append ONE coordinate (0) to the query so it matches the stored (D+2)-vectors."
                if _close(got[..., 0], q[..., 0]):
                    return "negate the query's time coordinate: <q, x>_L = -q_0 x_0 + q_s . x_s = (-q_0, q_s) . (x_0, x_s)."
                if not _close(got[..., -1], torch.zeros_like(got[..., -1])):
                    return "the query's extra coordinate is 0, so the stored points' extra coordinate adds nothing to q' . x'."
                return "q' = (-q_0, q_1, ..., q_D, 0)."
            yield Case(f"queries at distance 0.1..2.5 from the origin, {dtype}, c={c}", (q,), ("q",), expected,
                       0.0, 0.0, diagnose=diagnose)


CHECKS: dict[str, Check] = {c.name: c for c in [
    Check("expmap0", "my_expmap0(v, c) -> x", "h2arn.lorentz.expmap0",
          "exp map at the origin: space-only tangent (..., D) -> point (..., D+1), time first",
          _expmap0_cases, hint="x_space = sinh(sqrt(c)|v|)/(sqrt(c)|v|) * v, x_time = sqrt(1/c + |x_space|^2)."),
    Check("logmap0", "my_logmap0(x, c) -> v", "h2arn.lorentz.logmap0",
          "log map at the origin: point (..., D+1) -> space-only tangent (..., D)", _logmap0_cases),
    Check("dist", "my_dist(x, y, c) -> d", "h2arn.lorentz.dist",
          "geodesic distance on the hyperboloid of curvature -c", _dist_cases),
    Check("half_aperture", "my_half_aperture(x, c, K=0.1) -> phi", "h2arn.lorentz.half_aperture",
          "half-aperture of the entailment cone at x", _half_aperture_cases),
    Check("exterior_angle", "my_exterior_angle(x, y, c) -> theta", "h2arn.lorentz.exterior_angle",
          "exterior angle at x of the triangle (origin, x, y)", _exterior_angle_cases),
    Check("contribution_weights", "my_contribution_weights(z, mask, c, temperature) -> w",
          "h2arn.aggregation.contribution_weights(..., lift='expmap')",
          "contribution weights of the tokens of each sample (B, L, D) -> (B, L)", _contribution_cases),
    Check("contrastive_loss", "my_contrastive_loss(logits, pos_mask) -> loss",
          "h2arn.losses.multi_positive_contrastive",
          "multi-positive symmetric InfoNCE on a (B, B) logit matrix", _contrastive_cases),
    Check("recall_at_k", "my_recall_at_k(sim, txt_to_pc, k) -> percent", "h2arn.evaluate.retrieval_metrics (t2p_R@K)",
          "text->3D recall@K in percent from a (N_txt, N_pc) similarity matrix", _recall_cases),
    Check("ranking_map", "my_mean_average_precision(dist, related) -> map",
          "h2arn.data.hierarchy.mean_average_precision",
          "Nickel & Kiela's reconstruction MAP of an embedded tree from its distance matrix", _ranking_map_cases),
    Check("spatial_pooling", "my_spatial_pool(feats, xyz, num_tokens) -> tokens",
          "h2arn.encoders.tokens.pool_tokens(..., method='spatial')[0]",
          "spatial token pooling: FPS centroids, nearest-centroid groups, max over each group", _spatial_pooling_cases),
    Check("cone_loss", "my_cone_loss(text_emb, cloud_emb, pos_mask, c, K) -> loss",
          "h2arn.losses.entailment_cone_loss(...)[0]",
          "entailment-cone ordering loss with the text as apex, over positive pairs", _cone_loss_cases),
    Check("lr_schedule", "my_lr_multiplier(step, total_steps, warmup_steps) -> float", "h2arn.train.WarmupLinearDecay",
          "linear warm-up then linear decay learning-rate multiplier", _lr_schedule_cases),
    Check("hierarchical_map", "my_hierarchical_map(sim, txt_level, txt_label, pc_labels) -> percent",
          "h2arn.course.assignments.checks.reference_hierarchical_map",
          "hierarchy-aware text->3D mAP (a shape is relevant when it satisfies the caption at its level)",
          _hierarchical_map_cases),
    Check("in_cone", "my_in_cone(text, cloud, c, K) -> inside", "L.exterior_angle(text, cloud, c) <= L.half_aperture(text, c, K)",
          "whether each cloud lies inside its caption's entailment cone", _in_cone_cases),
    Check("mips_points", "my_mips_points(x, phi_sq) -> x_aug", "h2arn.course.assignments.checks.reference_mips_points",
          "the stored side of the Lorentz -> maximum-inner-product transform (h2arn.index, transform='augment')",
          _mips_points_cases),
    Check("mips_queries", "my_mips_queries(q) -> q_aug", "h2arn.course.assignments.checks.reference_mips_queries",
          "the query side of the Lorentz -> maximum-inner-product transform (h2arn.index)", _mips_queries_cases),
]}


# --------------------------------------------------------------------------- Riemannian optimisation (chapter 02)

def _geoopt_sgd_step(x: Tensor, egrad: Tensor, lr: float, c: float) -> Tensor:
    """The reference: ONE ``geoopt.optim.RiemannianSGD`` step of a ``ManifoldParameter`` on ``geoopt.Lorentz(k=1/c)``
    whose ``.grad`` is ``egrad``, computed in float64 and returned in ``x``'s dtype."""
    import geoopt

    manifold = geoopt.Lorentz(k=torch.tensor(L.to_geoopt_k(c), dtype=torch.float64))
    point = geoopt.ManifoldParameter(x.detach().double().clone(), manifold=manifold)
    point.grad = egrad.detach().double().clone()   # geoopt flips the time sign of .grad in place
    geoopt.optim.RiemannianSGD([point], lr=lr).step()
    return point.detach().as_subclass(Tensor).to(x.dtype)


def _riemannian_step_mistakes(x: Tensor, egrad: Tensor, lr: float, c: float) -> dict[str, Tensor]:
    """What the usual mistakes return (float64), so the diagnoser can name the one a student made."""
    x, g = x.double(), egrad.double()
    flip = torch.cat([-g[..., :1], g[..., 1:]], dim=-1)

    def proj(h: Tensor, scale: float) -> Tensor:
        return h + scale * L.inner(x, h, keepdim=True) * x
    rgrad = proj(flip, c)
    return {
        "no_flip": L.expmap(x, -lr * proj(g, c), c),
        "no_projection": L.expmap(x, -lr * flip, c),
        "k_for_c": L.expmap(x, -lr * proj(flip, 1.0 / c), c),
        "ascent": L.expmap(x, lr * rgrad, c),
        "euclidean_then_project": L.project(x - lr * g, c),
        "projection_retraction": L.project(x - lr * rgrad, c),
        "rgrad": rgrad,
    }


_RIEMANNIAN_STEP_HINTS = {
    "rgrad": "you returned the Riemannian gradient; return the NEW POINT x_new = exp_x(-lr * rgrad).",
    "no_flip": ("the Euclidean gradient lives in the dual space: multiply by the inverse Lorentz metric first, i.e. "
                "flip the sign of its TIME coordinate (h = (-g_0, g_1, ..., g_D)), then project."),
    "k_for_c": ("curvature convention: the tangent projection is h + c <x, h>_L x in this course (<x,x>_L = -1/c); "
                "geoopt writes h + <x, h>_L x / k with k = 1/c."),
    "ascent": "sign: gradient DESCENT steps along -rgrad: x_new = exp_x(-lr * rgrad).",
    "euclidean_then_project": ("that is a Euclidean step followed by a projection (x - lr * g, time recomputed): "
                               "convert the gradient (flip time, project on the tangent space) and follow the "
                               "geodesic with the exp map."),
    "projection_retraction": ("you retracted by projection (x - lr * rgrad, time recomputed): a first-order "
                              "retraction, not geoopt's Lorentz.retr, which is the exp map "
                              "cosh(sqrt(c)|u|_L) x + sinh(sqrt(c)|u|_L) / (sqrt(c)|u|_L) u."),
    "no_projection": ("project the flipped gradient onto the tangent space at x (h + c <x, h>_L x) before the exp "
                      "map: the exp map is only defined for tangent vectors."),
}


def _riemannian_step_cases() -> Iterator[Case]:
    dim = 4
    for dtype in DTYPES:
        rtol, atol = (2e-4, 1e-4) if dtype == torch.float32 else (1e-7, 1e-9)
        for c in CURVATURES:
            for lr in (0.02, 0.2):
                g = _generator("riemannian_sgd_step", int(c * 100) + int(lr * 1000))
                x = L.project(_points(16, dim, c, g, 0.1, 2.5).to(dtype), c)
                egrad = (torch.randn(16, dim + 1, generator=g, dtype=torch.float64) / math.sqrt(c)).to(dtype)
                expected = _geoopt_sgd_step(x, egrad, lr, c)

                def diagnose(got: Tensor, x=x, egrad=egrad, lr=lr, c=c) -> str | None:
                    if got.shape != x.shape:
                        return "return the new point, shape (..., D+1) like x (time coordinate first)."
                    for name, candidate in _riemannian_step_mistakes(x, egrad, lr, c).items():
                        # space parts only: a mistake is recognised whether or not the time was recomputed
                        if (name != "k_for_c" or c != 1.0) and _close(got[..., 1:], candidate[..., 1:]):
                            return _RIEMANNIAN_STEP_HINTS[name]
                    if not bool(torch.isfinite(got).all()):
                        return "non-finite output: guard sinh(r)/r at r = 0 (clamp the Lorentz norm from below)."
                    return ("rgrad = h + c <x, h>_L x with h = egrad with its time sign flipped; "
                            "x_new = cosh(sqrt(c)|u|_L) x + sinh(sqrt(c)|u|_L)/(sqrt(c)|u|_L) u, u = -lr * rgrad.")
                yield Case(f"random points (distance 0.1..2.5 from the origin) and Gaussian gradients, {dtype}, "
                           f"c={c}, lr={lr}", (x, egrad, lr, c), ("x", "egrad", "lr", "c"), expected, rtol, atol,
                           diagnose=diagnose)
        g = _generator("riemannian_sgd_step", 1)
        x = L.project(_points(12, dim, 1.0, g, 0.1, 2.0).to(dtype), 1.0).reshape(3, 4, dim + 1)
        egrad = torch.randn(3, 4, dim + 1, generator=g, dtype=torch.float64).to(dtype)
        yield Case(f"leading batch shape (3, 4), {dtype}, c=1.0, lr=0.1", (x, egrad, 0.1, 1.0),
                   ("x", "egrad", "lr", "c"), _geoopt_sgd_step(x, egrad, 0.1, 1.0), rtol, atol, batch_ndim=2,
                   hint="reduce over the last axis only (L.inner(x, h, keepdim=True)).")
        x = L.project(_points(4, dim, 0.5, g, 0.1, 2.0).to(dtype), 0.5)
        yield Case(f"a zero gradient, {dtype}, c=0.5: the point must not move", (x, torch.zeros_like(x), 0.1, 0.5),
                   ("x", "egrad", "lr", "c"), _geoopt_sgd_step(x, torch.zeros_like(x), 0.1, 0.5), rtol, atol,
                   hint="at u = 0, sinh(r)/r is 0/0 = NaN: clamp the Lorentz norm of u from below (e.g. 1e-15).")


CHECKS["riemannian_sgd_step"] = Check(
    "riemannian_sgd_step", "my_riemannian_sgd_step(x, egrad, lr, c) -> x_new",
    "geoopt.optim.RiemannianSGD on geoopt.Lorentz(k=1/c) (one step, no momentum)",
    "one Riemannian gradient step on the hyperboloid: Euclidean gradient -> Riemannian gradient -> exp map",
    _riemannian_step_cases,
    hint="h = egrad with its time sign flipped; rgrad = h + c <x, h>_L x; x_new = exp_x(-lr * rgrad).")


def available_checks() -> list[str]:
    """Names accepted by :func:`check`."""
    return list(CHECKS)


def run_check(name: str, fn: Callable) -> int:
    """Run every case of check ``name`` on ``fn``; raise :class:`CheckFailure` on the first failure.

    Returns the number of cases passed.
    """
    if name not in CHECKS:
        raise KeyError(f"unknown check {name!r}; available: {', '.join(CHECKS)}")
    if not callable(fn):
        raise TypeError(f"check({name!r}, ...) needs your function itself (e.g. my_{name}), got {type(fn).__name__}")
    spec = CHECKS[name]
    n = 0
    for case in spec.cases():
        got = _call(spec, fn, case)
        _compare(spec, fn, case, got)
        n += 1
    return n


def check(name: str, fn: Callable, *, quiet: bool = False) -> None:
    """The call students write after an exercise: ``check("dist", my_dist)``.

    Prints one ``PASSED`` line (nothing with ``quiet``); fails with :class:`CheckFailure` (an
    AssertionError) whose message names the input, expected vs got, and a hint. Returns None so a
    notebook cell ending with it shows only that line (:func:`run_check` returns the case count).
    """
    n = run_check(name, fn)
    if not quiet:
        print(f"PASSED {name}: {_fn_name(fn)} matches {CHECKS[name].reference} on {n} seeded cases.")
