"""Parametric part geometry and surface sampling for the generated benchmark (numpy only).

Why parametric parts: every point knows which part it came from (``part_id``), every part has a
phrase ("two curved handles"), and the attributes that the captions mention (tall, narrow neck,
four legs, blue) are the ones that shaped the geometry, so text and 3D agree by construction.

Conventions: **y is up**, objects stand on ``y = 0`` and are centred on the y axis before
normalisation; colours are rgb in ``0..1``. Every sampler is area-weighted so that point density
is uniform over the surface, like a mesh sampled for ModelNet40.

A builder ``build_<category>(rng) -> ShapeSpec`` draws the attributes and parts of one object;
:func:`sample_spec` turns a spec into ``n`` coloured points.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from scipy.interpolate import PchipInterpolator

Sampler = Callable[[int, np.random.Generator], np.ndarray]

# --------------------------------------------------------------------------- colours and materials

COLORS: Dict[str, Tuple[float, float, float]] = {
    "red": (0.72, 0.14, 0.12), "blue": (0.16, 0.30, 0.72), "green": (0.20, 0.52, 0.24),
    "yellow": (0.90, 0.78, 0.20), "white": (0.92, 0.92, 0.89), "black": (0.10, 0.10, 0.11),
    "brown": (0.45, 0.28, 0.14), "grey": (0.50, 0.50, 0.52), "orange": (0.90, 0.50, 0.12),
    "purple": (0.45, 0.20, 0.55), "beige": (0.84, 0.77, 0.62), "gold": (0.80, 0.65, 0.22),
    "dark green": (0.17, 0.33, 0.25), "light blue": (0.62, 0.78, 0.90), "pink": (0.90, 0.60, 0.68),
}

MATERIAL_COLORS: Dict[str, List[str]] = {
    "ceramic": ["white", "blue", "red", "green", "yellow", "black"],
    "porcelain": ["white"],
    "glass": ["green", "light blue", "brown"],
    "wooden": ["brown", "black", "beige", "red"],
    "metal": ["grey", "black", "white", "gold"],
    "bronze": ["dark green", "gold", "brown"],
    "stone": ["grey", "beige", "white"],
    "jade": ["green"],
    "plastic": ["red", "blue", "white", "black", "yellow", "orange"],
}


def pick_color(material: str, rng: np.random.Generator) -> str:
    return str(rng.choice(MATERIAL_COLORS[material]))


# --------------------------------------------------------------------------- spec types

@dataclass
class Part:
    """One surface piece: how to sample it, its area (for point allocation), colour and phrase."""
    name: str
    sampler: Sampler
    area: float
    color: Tuple[float, float, float]
    phrase: Optional[str] = None
    stripe: Optional[Tuple[Tuple[float, float, float], float]] = None  # (second colour, band height)


@dataclass
class ShapeSpec:
    category: str
    attributes: Dict[str, object]
    parts: List[Part] = field(default_factory=list)

    def add(self, name: str, prim: Tuple[Sampler, float], color, phrase=None, stripe=None) -> None:
        sampler, area = prim
        self.parts.append(Part(name, sampler, float(area), tuple(COLORS[color]) if isinstance(color, str)
                               else tuple(color), phrase, stripe))


# --------------------------------------------------------------------------- primitives
# Each returns (sampler, area). Samplers return (n, 3) float64 points.

def lathe(ys: np.ndarray, rs: np.ndarray) -> Tuple[Sampler, float]:
    """Surface of revolution about the y axis through the profile ``(ys[k], rs[k])``.

    Segments are frustums; a segment is picked with probability proportional to its area and
    the position along it with density proportional to the radius (inverse CDF), so sampling is
    exactly uniform over the frustum surface.
    """
    ys = np.asarray(ys, float)
    rs = np.maximum(np.asarray(rs, float), 1e-4)
    y0, y1, r0, r1 = ys[:-1], ys[1:], rs[:-1], rs[1:]
    slant = np.hypot(y1 - y0, r1 - r0)
    areas = np.pi * (r0 + r1) * slant
    prob = areas / areas.sum()

    def sample(n: int, rng: np.random.Generator) -> np.ndarray:
        k = rng.choice(len(prob), size=n, p=prob)
        u = rng.random(n)
        a, b = r0[k], r1[k]
        diff = b - a
        safe = np.where(np.abs(diff) < 1e-9, 1.0, diff)
        t = np.where(np.abs(diff) < 1e-9, u, (np.sqrt(a * a + u * (b * b - a * a)) - a) / safe)
        r = a + diff * t
        y = y0[k] + (y1[k] - y0[k]) * t
        th = rng.random(n) * 2 * np.pi
        return np.stack([r * np.cos(th), y, r * np.sin(th)], axis=1)

    return sample, float(areas.sum())


def smooth_profile(knots_y, knots_r, n: int = 40) -> Tuple[np.ndarray, np.ndarray]:
    """Monotone cubic (PCHIP) interpolation of a few control radii: smooth, no overshoot."""
    ys = np.linspace(knots_y[0], knots_y[-1], n)
    return ys, PchipInterpolator(knots_y, knots_r)(ys)


def disk(y: float, radius: float, center=(0.0, 0.0), inner: float = 0.0) -> Tuple[Sampler, float]:
    """Horizontal disk (or ring when ``inner > 0``) at height ``y``."""
    def sample(n, rng):
        r = np.sqrt(inner ** 2 + rng.random(n) * (radius ** 2 - inner ** 2))
        th = rng.random(n) * 2 * np.pi
        return np.stack([center[0] + r * np.cos(th), np.full(n, y), center[1] + r * np.sin(th)], axis=1)
    return sample, np.pi * (radius ** 2 - inner ** 2)


def box(center, size) -> Tuple[Sampler, float]:
    """Closed axis-aligned box surface; faces picked by area."""
    c = np.asarray(center, float)
    s = np.asarray(size, float)
    face_areas = np.array([s[1] * s[2], s[1] * s[2], s[0] * s[2], s[0] * s[2], s[0] * s[1], s[0] * s[1]])
    prob = face_areas / face_areas.sum()

    def sample(n, rng):
        f = rng.choice(6, size=n, p=prob)
        p = rng.random((n, 3)) - 0.5
        axis = f // 2
        sign = np.where(f % 2 == 0, -0.5, 0.5)
        p[np.arange(n), axis] = sign
        return c + p * s
    return sample, float(face_areas.sum())


def triangles(vertices, faces, vertex_colors=None) -> Tuple[Sampler, float]:
    """Surface of a triangle mesh ``vertices (V, 3)``, ``faces (F, 3)`` int; triangles picked by area.

    The same scheme as every primitive here (a piece picked with probability proportional to its
    area, then a uniform position on it: ``sqrt`` barycentric coordinates), so a user's mesh is sampled
    exactly as the generated benchmark's shapes are (:mod:`h2arn.meshes` reads the files). With
    ``vertex_colors (V, 3)`` the sampler returns ``(n, 6)`` (xyz, colour interpolated barycentrically).
    Degenerate (zero-area) triangles are never picked; a mesh with no area raises ``ValueError``.
    """
    v = np.asarray(vertices, float)
    f = np.asarray(faces, dtype=np.int64)
    a, b, cc = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    face_areas = 0.5 * np.linalg.norm(np.cross(b - a, cc - a), axis=1)
    total = float(face_areas.sum())
    if not (np.isfinite(total) and total > 0):
        raise ValueError("the mesh has no surface area (every triangle is degenerate)")
    prob = face_areas / total
    col = None if vertex_colors is None else np.asarray(vertex_colors, float)

    def sample(n, rng):
        k = rng.choice(len(prob), size=n, p=prob)
        r1, r2 = np.sqrt(rng.random(n)), rng.random(n)
        wa, wb, wc = (1 - r1)[:, None], (r1 * (1 - r2))[:, None], (r1 * r2)[:, None]
        pts = wa * a[k] + wb * b[k] + wc * cc[k]
        if col is None:
            return pts
        fk = f[k]
        return np.concatenate([pts, wa * col[fk[:, 0]] + wb * col[fk[:, 1]] + wc * col[fk[:, 2]]], axis=1)
    return sample, total


def _frame(direction: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    d = direction / np.linalg.norm(direction)
    helper = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 0.0, 1.0])
    e1 = np.cross(d, helper)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(d, e1)


def tube(p0, p1, radius: float) -> Tuple[Sampler, float]:
    """Lateral surface of a cylinder between two end points (legs, poles, bars)."""
    a, b = np.asarray(p0, float), np.asarray(p1, float)
    axis = b - a
    length = float(np.linalg.norm(axis))
    e1, e2 = _frame(axis)

    def sample(n, rng):
        t = rng.random(n)[:, None]
        th = rng.random(n) * 2 * np.pi
        ring = radius * (np.cos(th)[:, None] * e1 + np.sin(th)[:, None] * e2)
        return a + t * axis + ring
    return sample, 2 * np.pi * radius * length


def ellipsoid(center, radii) -> Tuple[Sampler, float]:
    """Ellipsoid surface (normalised Gaussian directions, stretched; near-uniform for mild ratios)."""
    c, r = np.asarray(center, float), np.asarray(radii, float)
    a, b, cc = r
    p = 1.6075  # Knud Thomsen's surface-area approximation
    area = 4 * np.pi * (((a * b) ** p + (a * cc) ** p + (b * cc) ** p) / 3) ** (1 / p)

    def sample(n, rng):
        d = rng.normal(size=(n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        return c + d * r
    return sample, float(area)


def torus_arc(center, major: float, minor: float, e1, e2, phi0: float, phi1: float) -> Tuple[Sampler, float]:
    """Part of a torus tube: the centre line is ``center + major (cos phi e1 + sin phi e2)``.

    Used for handles (a C-shaped arc sticking out of a body) and foot rings.
    """
    c = np.asarray(center, float)
    e1, e2 = np.asarray(e1, float), np.asarray(e2, float)
    e3 = np.cross(e1, e2)

    def sample(n, rng):
        phi = phi0 + rng.random(n) * (phi1 - phi0)
        psi = rng.random(n) * 2 * np.pi
        radial = np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2
        return c + (major + minor * np.cos(psi))[:, None] * radial + (minor * np.sin(psi))[:, None] * e3
    return sample, 2 * np.pi * minor * major * abs(phi1 - phi0)


# --------------------------------------------------------------------------- sampling a spec

def allocate(weights: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` points over parts proportionally to ``weights`` (largest remainder, deterministic)."""
    w = np.asarray(weights, float)
    raw = w / w.sum() * n
    counts = np.floor(raw).astype(int)
    rest = n - counts.sum()
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[:rest]] += 1
    return counts


def sample_spec(spec: ShapeSpec, n: int, rng: np.random.Generator, color_noise: float = 0.03
                ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` surface points of a spec: xyz ``(n,3)``, rgb ``(n,3)`` in 0..1, part_id ``(n,)`` int."""
    counts = allocate([p.area for p in spec.parts], n)
    xyz, rgb, pid = [], [], []
    for i, (part, k) in enumerate(zip(spec.parts, counts)):
        if k == 0:
            continue
        pts = part.sampler(int(k), rng)
        col = np.tile(np.asarray(part.color, float), (int(k), 1))
        if part.stripe is not None:
            second, band = part.stripe
            on = (np.floor(pts[:, 1] / band).astype(int) % 2) == 1
            col[on] = second
        xyz.append(pts)
        rgb.append(col)
        pid.append(np.full(int(k), i))
    rgb_all = np.concatenate(rgb) + rng.normal(scale=color_noise, size=(n, 3))
    return np.concatenate(xyz), np.clip(rgb_all, 0.0, 1.0), np.concatenate(pid)


def normalize_unit_sphere(xyz: np.ndarray) -> Tuple[np.ndarray, np.ndarray, float]:
    """Centre on the bounding-box centre and scale into the unit sphere (ModelNet40 convention)."""
    center = (xyz.max(0) + xyz.min(0)) / 2
    out = xyz - center
    scale = float(np.linalg.norm(out, axis=1).max()) or 1.0
    return out / scale, center, scale


# --------------------------------------------------------------------------- helpers for builders

def _choice(rng, options):
    return options[int(rng.integers(len(options)))]


def _handle_pair(spec, y_low, y_high, r_attach, color, count, phrase):
    """``count`` C-shaped handles on the sides of a body of revolution between two heights."""
    radius = (y_high - y_low) / 2
    ymid = (y_low + y_high) / 2
    for k in range(count):
        ang = np.pi * k if count == 2 else 0.0
        e1 = np.array([np.cos(ang), 0.0, np.sin(ang)])
        spec.add("handle", torus_arc(np.array([r_attach * np.cos(ang), ymid, r_attach * np.sin(ang)]),
                                     radius, radius * 0.16, e1, [0, 1, 0], -np.pi / 2, np.pi / 2),
                 color, phrase if k == 0 else None)


_COUNT = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven"}


def count_word(k: int) -> str:
    return _COUNT.get(k, str(k))


# --------------------------------------------------------------------------- artefact builders
# Each returns a ShapeSpec; attributes use a small closed vocabulary that captions.py turns into words.

def build_vase(rng):
    material = _choice(rng, ["ceramic", "porcelain", "ceramic", "glass", "bronze"])
    color = pick_color(material, rng)
    height = _choice(rng, ["tall", "short"])
    neck = _choice(rng, ["narrow", "wide"])
    handles = _choice(rng, [0, 0, 2])
    pattern = "blue and white" if material == "porcelain" else _choice(rng, ["plain", "plain", "striped"])
    H = rng.uniform(1.3, 1.7) if height == "tall" else rng.uniform(0.7, 0.95)
    belly = rng.uniform(0.32, 0.42)
    rn = belly * (0.3 if neck == "narrow" else 0.62)
    ys, rs = smooth_profile([0, 0.35 * H, 0.65 * H, 0.85 * H, H],
                            [belly * 0.55, belly, rn * 1.2, rn, rn * 1.35])
    spec = ShapeSpec("vase", {"material": material, "color": color, "height": height, "neck": neck,
                              "handles": handles, "pattern": pattern})
    cut = np.searchsorted(ys, 0.65 * H)
    stripe = (COLORS["blue"], H / 9) if pattern == "blue and white" else (
        (COLORS[_choice(rng, ["white", "black", "gold"])], H / 7) if pattern == "striped" else None)
    spec.add("body", lathe(ys[:cut + 1], rs[:cut + 1]), color, f"a round {'bulging ' if height == 'short' else ''}body",
             stripe=stripe)
    spec.add("neck", lathe(ys[cut:], rs[cut:]), color, f"a {neck} neck", stripe=stripe)
    spec.add("base", disk(0.0, belly * 0.55), color)
    if handles:
        _handle_pair(spec, 0.5 * H, 0.8 * H, rn * 1.1 + 0.02, color, handles, "two handles on the sides")
    return spec


def build_bottle(rng):
    material = _choice(rng, ["glass", "glass", "plastic", "ceramic"])
    color = pick_color(material, rng)
    height = _choice(rng, ["tall", "short"])
    cap = _choice(rng, [True, False])
    r = rng.uniform(0.13, 0.18)
    H = rng.uniform(1.3, 1.6) if height == "tall" else rng.uniform(0.95, 1.15)
    neck_r = r * rng.uniform(0.3, 0.4)
    ys, rs = smooth_profile([0, 0.05 * H, 0.55 * H, 0.72 * H, 0.8 * H, H],
                            [r * 0.95, r, r, neck_r * 1.3, neck_r, neck_r])
    spec = ShapeSpec("bottle", {"material": material, "color": color, "height": height, "cap": cap})
    cut = np.searchsorted(ys, 0.6 * H)
    spec.add("body", lathe(ys[:cut + 1], rs[:cut + 1]), color, "a cylindrical body")
    spec.add("neck", lathe(ys[cut:], rs[cut:]), color, "a long thin neck")
    spec.add("base", disk(0.0, r * 0.95), color)
    if cap:
        cap_color = _choice(rng, ["red", "black", "white", "gold"])
        spec.attributes["cap_color"] = cap_color
        spec.add("cap", lathe([H, H + 0.06 * H], [neck_r * 1.15, neck_r * 1.15]), cap_color, f"a {cap_color} cap")
    return spec


def build_cup(rng):
    material = _choice(rng, ["ceramic", "ceramic", "porcelain", "metal", "plastic"])
    color = pick_color(material, rng)
    handle = _choice(rng, [True, True, False])
    height = _choice(rng, ["tall", "short"])
    r = rng.uniform(0.35, 0.45)
    H = r * (rng.uniform(2.0, 2.4) if height == "tall" else rng.uniform(1.1, 1.4))
    taper = rng.uniform(0.75, 1.0)
    spec = ShapeSpec("cup", {"material": material, "color": color, "handle": handle, "height": height})
    spec.add("wall", lathe([0, H], [r * taper, r]), color, "straight sides" if taper > 0.9 else "tapered sides")
    spec.add("inside", lathe([0.04 * H, H], [r * taper * 0.92, r * 0.94]), color)
    spec.add("bottom", disk(0.0, r * taper), color, "a flat bottom")
    if handle:
        _handle_pair(spec, 0.2 * H, 0.8 * H, r * 0.95, color, 1, "a handle on one side")
    return spec


def build_bowl(rng):
    material = _choice(rng, ["ceramic", "porcelain", "wooden", "bronze", "stone"])
    color = pick_color(material, rng)
    depth = _choice(rng, ["deep", "shallow"])
    foot = _choice(rng, [True, False])
    R = rng.uniform(0.9, 1.1)
    H = R * (rng.uniform(0.55, 0.7) if depth == "deep" else rng.uniform(0.25, 0.35))
    t = np.linspace(0, 1, 30)
    rs = R * np.sin(0.15 + t * (np.pi / 2 - 0.15))
    ys = H * (1 - np.cos(t * np.pi / 2)) + (0.08 * H if foot else 0)
    spec = ShapeSpec("bowl", {"material": material, "color": color, "depth": depth, "foot": foot,
                              "pattern": "blue and white" if material == "porcelain" else "plain"})
    stripe = (COLORS["blue"], H / 5) if material == "porcelain" else None
    spec.add("body", lathe(ys, rs), color, "a round body" if depth == "shallow" else "steep curved sides", stripe=stripe)
    spec.add("inside", lathe(ys[1:] + 0.02, rs[1:] * 0.95), color)
    if foot:
        spec.add("foot", lathe([0, 0.08 * H], [rs[0] * 1.05, rs[0]]), color, "a small round foot")
    return spec


def build_jar(rng):
    material = _choice(rng, ["ceramic", "porcelain", "stone", "bronze"])
    color = pick_color(material, rng)
    lid = _choice(rng, [True, False])
    ears = _choice(rng, [0, 2])
    R = rng.uniform(0.45, 0.55)
    H = rng.uniform(0.9, 1.2)
    ys, rs = smooth_profile([0, 0.4 * H, 0.85 * H, H], [R * 0.6, R, R * 0.55, R * 0.5])
    spec = ShapeSpec("jar", {"material": material, "color": color, "lid": lid, "ears": ears})
    spec.add("body", lathe(ys, rs), color, "a wide round body",
             stripe=(COLORS["blue"], H / 6) if material == "porcelain" else None)
    spec.add("base", disk(0.0, R * 0.6), color)
    if lid:
        spec.add("lid", lathe([H, H + 0.08, H + 0.12], [R * 0.55, R * 0.35, 0.03]), color, "a domed lid")
        spec.add("knob", ellipsoid([0, H + 0.15, 0], [0.05, 0.04, 0.05]), color)
    if ears:
        _handle_pair(spec, 0.65 * H, 0.85 * H, R * 0.75, color, 2, "two small ear handles")
    return spec


def build_ding(rng):
    """A ding: the bronze ritual cauldron of Chinese antiquity (tripod or square, upright handles)."""
    form = _choice(rng, ["round", "square"])
    color = pick_color("bronze", rng)
    R = rng.uniform(0.5, 0.6)
    leg_h = rng.uniform(0.35, 0.55)
    body_h = rng.uniform(0.45, 0.6)
    spec = ShapeSpec("ding", {"material": "bronze", "color": color, "form": form,
                              "legs": 3 if form == "round" else 4})
    if form == "round":
        ys, rs = smooth_profile([leg_h, leg_h + 0.3 * body_h, leg_h + body_h], [R * 0.55, R * 0.95, R])
        spec.add("body", lathe(ys, rs), color, "a deep round body")
        spec.add("bottom", disk(leg_h, R * 0.55), color)
        angs = np.arange(3) * 2 * np.pi / 3
        feet = [(R * 0.55 * np.cos(a), R * 0.55 * np.sin(a)) for a in angs]
    else:
        spec.add("body", box([0, leg_h + body_h / 2, 0], [2 * R * 0.9, body_h, 2 * R * 0.9]), color,
                 "a square box-like body")
        feet = [(sx * R * 0.6, sz * R * 0.6) for sx in (-1, 1) for sz in (-1, 1)]
    for i, (x, z) in enumerate(feet):
        spec.add("leg", tube([x, 0, z], [x, leg_h + 0.02, z], rng.uniform(0.05, 0.07)), color,
                 f"{count_word(len(feet))} sturdy legs" if i == 0 else None)
    top = leg_h + body_h
    for k, s in enumerate((-1, 1)):
        spec.add("handle", torus_arc([s * R * 0.75, top, 0], 0.12, 0.025, [0, 1, 0], [0, 0, 1], 0, np.pi),
                 color, "two upright loop handles on the rim" if k == 0 else None)
    return spec


def build_chair(rng):
    material = _choice(rng, ["wooden", "wooden", "metal", "plastic"])
    color = pick_color(material, rng)
    back = _choice(rng, ["solid", "slatted"])
    arms = _choice(rng, [False, False, True])
    back_h = _choice(rng, ["tall", "short"])
    legs = "thin" if material == "metal" else _choice(rng, ["thin", "thick"])
    w, d, seat_y = rng.uniform(0.45, 0.55), rng.uniform(0.45, 0.55), rng.uniform(0.42, 0.48)
    bh = rng.uniform(0.55, 0.7) if back_h == "tall" else rng.uniform(0.3, 0.4)
    lr = 0.025 if legs == "thin" else 0.045
    spec = ShapeSpec("chair", {"material": material, "color": color, "back": back, "arms": arms,
                               "back_height": back_h, "legs": legs})
    spec.add("seat", box([0, seat_y, 0], [w, 0.05, d]), color, "a square seat")
    for i, (sx, sz) in enumerate([(-1, -1), (1, -1), (-1, 1), (1, 1)]):
        x, z = sx * (w / 2 - lr), sz * (d / 2 - lr)
        spec.add("leg", tube([x, 0, z], [x, seat_y, z], lr), color, f"four {legs} legs" if i == 0 else None)
    if back == "solid":
        spec.add("back", box([0, seat_y + bh / 2, d / 2 - 0.02], [w, bh, 0.04]), color, f"a {back_h} solid backrest")
    else:
        n_slats = int(rng.integers(3, 6))
        spec.attributes["slats"] = n_slats
        spec.add("back", box([0, seat_y + bh - 0.04, d / 2 - 0.02], [w, 0.08, 0.04]), color,
                 f"{count_word(n_slats)} vertical slats in the back")
        for k in range(n_slats):
            x = -w / 2 + 0.04 + k * (w - 0.08) / max(n_slats - 1, 1)
            spec.add("slat", tube([x, seat_y, d / 2 - 0.02], [x, seat_y + bh - 0.08, d / 2 - 0.02], 0.015), color)
        for sx in (-1, 1):
            spec.add("post", tube([sx * (w / 2 - lr), seat_y, d / 2 - lr], [sx * (w / 2 - lr), seat_y + bh, d / 2 - lr],
                                  lr), color)
    if arms:
        for k, sx in enumerate((-1, 1)):
            spec.add("arm", box([sx * w / 2, seat_y + 0.22, 0], [0.05, 0.04, d * 0.9]), color,
                     "armrests on both sides" if k == 0 else None)
            spec.add("arm", tube([sx * w / 2, seat_y, -d * 0.35], [sx * w / 2, seat_y + 0.2, -d * 0.35], 0.02), color)
    return spec


def build_table(rng):
    material = _choice(rng, ["wooden", "wooden", "metal", "stone"])
    color = pick_color(material, rng)
    top = _choice(rng, ["round", "rectangular", "square"])
    support = _choice(rng, ["four legs", "four legs", "four legs", "pedestal"])
    kind = _choice(rng, ["dining", "coffee"])
    H = rng.uniform(0.7, 0.78) if kind == "dining" else rng.uniform(0.4, 0.48)
    spec = ShapeSpec("table", {"material": material, "color": color, "top": top, "support": support, "kind": kind})
    t = rng.uniform(0.06, 0.09)
    if top == "round":
        R = rng.uniform(0.7, 0.9)
        spec.add("top", lathe([H - t, H - t, H, H], [0.0, R, R, 0.0]), color, "a round top")
        half = (R * 0.68, R * 0.68)
    else:
        W = rng.uniform(1.5, 2.0) if top == "rectangular" else rng.uniform(1.2, 1.5)
        D = rng.uniform(0.7, 0.9) if top == "rectangular" else W
        spec.add("top", box([0, H - t / 2, 0], [D, t, W]), color, f"a {top} top")  # long side along z
        half = (D / 2 - 0.08, W / 2 - 0.08)
    if support == "four legs":
        lr = rng.uniform(0.035, 0.06)
        for i, (sx, sz) in enumerate([(-1, -1), (1, -1), (-1, 1), (1, 1)]):
            spec.add("leg", tube([sx * half[0], 0, sz * half[1]], [sx * half[0], H - t, sz * half[1]], lr), color,
                     "four legs" if i == 0 else None)
    else:
        spec.add("pedestal", tube([0, 0.03, 0], [0, H - t, 0], 0.06), color, "a single central leg")
        spec.add("foot", lathe([0, 0.03, 0.03], [0.35, 0.35, 0.0]), color, "a round base")
    return spec


def build_stool(rng):
    material = _choice(rng, ["wooden", "metal", "plastic"])
    color = pick_color(material, rng)
    n_legs = _choice(rng, [3, 4])
    height = _choice(rng, ["tall", "short"])
    H = rng.uniform(0.7, 0.8) if height == "tall" else rng.uniform(0.4, 0.48)
    R = rng.uniform(0.18, 0.22)
    spec = ShapeSpec("stool", {"material": material, "color": color, "legs": n_legs, "height": height})
    spec.add("seat", lathe([H - 0.04, H - 0.04, H, H], [0, R, R, 0]), color, "a round seat")
    for k in range(n_legs):
        a = 2 * np.pi * k / n_legs
        spec.add("leg", tube([1.4 * R * np.cos(a), 0, 1.4 * R * np.sin(a)],
                             [0.8 * R * np.cos(a), H - 0.04, 0.8 * R * np.sin(a)], 0.02), color,
                 f"{count_word(n_legs)} splayed legs" if k == 0 else None)
    if height == "tall":
        spec.attributes["footrest"] = True
        spec.add("footrest", torus_arc([0, 0.3 * H, 0], 1.2 * R, 0.012, [1, 0, 0], [0, 0, 1], 0, 2 * np.pi), color,
                 "a ring footrest")
    return spec


def build_lamp(rng):
    kind = _choice(rng, ["floor", "desk"])
    material = _choice(rng, ["metal", "metal", "wooden"])
    color = pick_color(material, rng)
    shade_color = _choice(rng, ["white", "beige", "red", "green", "black"])
    shade = _choice(rng, ["cone", "cylinder"])
    H = rng.uniform(1.5, 1.8) if kind == "floor" else rng.uniform(0.45, 0.6)
    sr = 0.22 if kind == "floor" else 0.15
    sh = 0.3 if kind == "floor" else 0.2
    spec = ShapeSpec("lamp", {"kind": kind, "material": material, "color": color, "shade": shade,
                              "shade_color": shade_color})
    spec.add("base", lathe([0, 0.04, 0.04], [sr * 0.9, sr * 0.9, 0.0]), color, "a round base")
    spec.add("pole", tube([0, 0.04, 0], [0, H - sh * 0.5, 0], 0.02 if kind == "floor" else 0.015), color,
             "a thin pole")
    top_r = sr * (0.55 if shade == "cone" else 1.0)
    spec.add("shade", lathe([H - sh, H], [sr, top_r]), shade_color, f"a {shade_color} {shade}-shaped shade")
    return spec


def build_statue(rng):
    material = _choice(rng, ["stone", "bronze", "stone", "jade"])
    color = pick_color(material, rng)
    plinth = _choice(rng, ["tall", "low"])
    ph = rng.uniform(0.5, 0.7) if plinth == "tall" else rng.uniform(0.15, 0.25)
    pcolor = _choice(rng, ["grey", "black", "beige"])
    spec = ShapeSpec("statue", {"material": material, "color": color, "plinth": plinth, "plinth_color": pcolor})
    spec.add("plinth", box([0, ph / 2, 0], [0.5, ph, 0.5]), pcolor, f"a {plinth} {pcolor} plinth")
    ys, rs = smooth_profile([ph, ph + 0.25, ph + 0.5, ph + 0.62], [0.22, 0.26, 0.2, 0.07])
    spec.add("torso", lathe(ys, rs), color, "a carved torso with shoulders")
    spec.add("head", ellipsoid([0, ph + 0.75, 0], [0.1, 0.13, 0.11]), color, "a small head on top")
    return spec


def build_pagoda(rng):
    material = _choice(rng, ["wooden", "stone", "bronze"])
    color = pick_color(material, rng)
    roof = _choice(rng, ["red", "black", "dark green", "grey"])
    tiers = int(rng.integers(3, 8))
    spec = ShapeSpec("pagoda", {"material": material, "color": color, "tiers": tiers, "roof_color": roof})
    y, w = 0.0, 0.8
    for k in range(tiers):
        h = 0.28 * (0.93 ** k)
        spec.add("storey", box([0, y + h / 2, 0], [w, h, w]), color,
                 f"{count_word(tiers)} stacked storeys" if k == 0 else None)
        spec.add("roof", box([0, y + h + 0.02, 0], [w * 1.35, 0.04, w * 1.35]), roof,
                 f"wide {roof} roofs" if k == 0 else None)
        y += h + 0.04
        w *= 0.85
    spec.add("spire", tube([0, y, 0], [0, y + 0.35, 0], 0.02), roof, "a thin spire on top")
    return spec


def build_figurine(rng):
    """An elephant figurine: the dataset's namesake artefact."""
    material = _choice(rng, ["jade", "bronze", "porcelain", "stone"])
    color = pick_color(material, rng)
    saddle = _choice(rng, [True, False])
    trunk = _choice(rng, ["raised", "lowered"])
    spec = ShapeSpec("figurine", {"material": material, "color": color, "saddle": saddle, "trunk": trunk})
    L_, leg_h = rng.uniform(0.55, 0.7), rng.uniform(0.3, 0.4)
    spec.add("body", ellipsoid([0, leg_h + 0.2, 0], [L_ / 2, 0.25, 0.22]), color, "a large round body")
    for i, (sx, sz) in enumerate([(-1, -1), (1, -1), (-1, 1), (1, 1)]):
        spec.add("leg", tube([sx * L_ * 0.3, 0, sz * 0.12], [sx * L_ * 0.3, leg_h + 0.1, sz * 0.12], 0.07), color,
                 "four thick legs" if i == 0 else None)
    hx, hy = L_ / 2 + 0.08, leg_h + 0.35
    spec.add("head", ellipsoid([hx, hy, 0], [0.15, 0.16, 0.15]), color, "a big head")
    for k, sz in enumerate((-1, 1)):
        spec.add("ear", ellipsoid([hx - 0.05, hy + 0.02, sz * 0.17], [0.08, 0.14, 0.03]), color,
                 "two flat ears" if k == 0 else None)
    tip = [hx + 0.3, hy + 0.15, 0] if trunk == "raised" else [hx + 0.12, 0.05, 0]
    mid = [hx + 0.2, hy - 0.1, 0]
    spec.add("trunk", tube([hx + 0.1, hy - 0.05, 0], mid, 0.045), color, f"a {trunk} trunk")
    spec.add("trunk", tube(mid, tip, 0.035), color)
    if saddle:
        sc = _choice(rng, ["red", "gold", "blue"])
        spec.attributes["saddle_color"] = sc
        spec.add("saddle", box([0, leg_h + 0.47, 0], [0.3, 0.08, 0.4]), sc, f"a {sc} saddle on its back")
    return spec


ARTEFACT_BUILDERS: Dict[str, Callable[[np.random.Generator], ShapeSpec]] = {
    "vase": build_vase, "bottle": build_bottle, "cup": build_cup, "bowl": build_bowl, "jar": build_jar,
    "ding": build_ding, "chair": build_chair, "table": build_table, "stool": build_stool, "lamp": build_lamp,
    "statue": build_statue, "pagoda": build_pagoda, "figurine": build_figurine,
}

# real-world height in metres of each artefact when it is placed in a scene
SCENE_HEIGHT = {"chair": 0.9, "table": 0.75, "stool": 0.6, "lamp": 1.6, "vase": 0.4, "bottle": 0.3, "cup": 0.12,
                "bowl": 0.12, "jar": 0.35, "statue": 1.2, "pagoda": 1.5, "figurine": 0.4, "ding": 0.5}


def object_points(spec: ShapeSpec, n: int, rng: np.random.Generator):
    """Sample a spec and normalise it to the unit sphere (y up): xyz, rgb, part_id."""
    xyz, rgb, pid = sample_spec(spec, n, rng)
    xyz, _, _ = normalize_unit_sphere(xyz)
    return xyz, rgb, pid
