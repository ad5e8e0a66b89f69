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
    "fabric": ["grey", "blue", "red", "beige", "green", "brown"],
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


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product of two 3-vectors (``np.cross`` costs ~50x more on single vectors)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _frame(direction: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    d = direction / np.linalg.norm(direction)
    helper = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 0.0, 1.0])
    e1 = _cross(d, helper)
    e1 /= np.linalg.norm(e1)
    return e1, _cross(d, e1)


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
    e3 = _cross(e1, e2)

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


def _handle_pair(spec, y_low, y_high, r_attach, color, count, phrase, thickness: float = 0.16):
    """``count`` C-shaped handles on the sides of a body of revolution between two heights (``thickness``:
    tube radius relative to the handle's radius)."""
    radius = (y_high - y_low) / 2
    ymid = (y_low + y_high) / 2
    for k in range(count):
        ang = np.pi * k if count == 2 else 0.0
        e1 = np.array([np.cos(ang), 0.0, np.sin(ang)])
        spec.add("handle", torus_arc(np.array([r_attach * np.cos(ang), ymid, r_attach * np.sin(ang)]),
                                     radius, radius * thickness, e1, [0, 1, 0], -np.pi / 2, np.pi / 2),
                 color, phrase if k == 0 else None)


_COUNT = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven"}


def count_word(k: int) -> str:
    return _COUNT.get(k, str(k))


# --------------------------------------------------------------------------- artefact builders
# ``build_<category>(rng, leaf) -> ShapeSpec``: ``leaf`` (a leaf of the taxonomy under that category) fixes
# the sub-type geometry; everything else (attributes, proportions) is drawn from ``rng``. Attributes use a
# small closed vocabulary that captions.py turns into words; every artefact has a ``material`` and a ``color``.
# Orientation follows ShapeNet (y up; long objects such as benches, bathtubs and upright pianos along x;
# rifles, aeroplane fuselages and grand pianos along z), so generated clouds can be compared with real ones.


def _spec(category, leaf, material, color, **attrs):
    return ShapeSpec(category, {"leaf": leaf, "material": material, "color": color, **attrs})


def build_vase(rng, leaf="flower vase"):
    material = _choice(rng, ["ceramic", "porcelain", "ceramic", "glass"] if leaf == "flower vase"
                       else ["ceramic", "stone", "bronze"])
    color = pick_color(material, rng)
    height = _choice(rng, ["tall", "short"])
    pattern = "blue and white" if material == "porcelain" else _choice(rng, ["plain", "plain", "striped"])
    H = rng.uniform(1.3, 1.7) if height == "tall" else rng.uniform(0.85, 1.05)
    belly = rng.uniform(0.36, 0.46)
    if leaf == "amphora":  # egg-shaped body tapering to a pointed foot, narrow neck, two tall handles
        rn = belly * 0.32
        ys, rs = smooth_profile([0, 0.12 * H, 0.45 * H, 0.72 * H, 0.86 * H, H],
                                [belly * 0.18, belly * 0.55, belly, belly * 0.6, rn, rn * 1.3])
        handles, neck = 2, "narrow"
    else:  # flower vase: round or ovoid body, open neck, no handles
        neck = _choice(rng, ["narrow", "wide"])
        rn = belly * (0.45 if neck == "narrow" else 0.75)
        ys, rs = smooth_profile([0, 0.35 * H, 0.7 * H, 0.88 * H, H],
                                [belly * 0.6, belly, rn * 1.1, rn, rn * 1.3])
        handles = 0
    spec = _spec("vase", leaf, material, color, height=height, neck=neck, handles=handles, pattern=pattern)
    cut = int(np.searchsorted(ys, 0.72 * H))
    stripe = (COLORS["blue"], H / 9) if pattern == "blue and white" else (
        (COLORS[_choice(rng, ["white", "black", "gold"])], H / 7) if pattern == "striped" else None)
    spec.add("body", lathe(ys[:cut + 1], rs[:cut + 1]), color,
             "an egg-shaped body" if leaf == "amphora" else "a round body", stripe=stripe)
    spec.add("neck", lathe(ys[cut:], rs[cut:]), color, f"a {neck} neck", stripe=stripe)
    spec.add("base", disk(0.0, max(rs[0], 0.03)), color)
    if handles:
        _handle_pair(spec, 0.6 * H, 0.9 * H, rn * 1.1 + 0.03, color, 2, "two tall handles on the sides")
    return spec


def build_bottle(rng, leaf="wine bottle"):
    wine = leaf == "wine bottle"
    material = "glass" if wine else _choice(rng, ["plastic", "plastic", "metal"])
    color = _choice(rng, ["dark green", "green", "brown", "black"]) if wine else pick_color(material, rng)
    height = _choice(rng, ["tall", "short"])
    r = rng.uniform(0.14, 0.18) if wine else rng.uniform(0.16, 0.21)
    H = (rng.uniform(1.25, 1.5) if height == "tall" else rng.uniform(0.95, 1.1))
    neck_r = r * (rng.uniform(0.3, 0.36) if wine else rng.uniform(0.45, 0.6))
    if wine:  # long cylinder, rounded shoulder, long thin neck
        ys, rs = smooth_profile([0, 0.04 * H, 0.6 * H, 0.7 * H, 0.78 * H, H],
                                [r * 0.95, r, r, neck_r * 1.6, neck_r, neck_r])
    else:  # water bottle: ribbed-looking wider body, short neck
        ys, rs = smooth_profile([0, 0.05 * H, 0.45 * H, 0.55 * H, 0.78 * H, 0.88 * H, H],
                                [r * 0.9, r, r * 0.92, r, r * 0.95, neck_r * 1.2, neck_r])
    cap = True if not wine else _choice(rng, [True, False])
    spec = _spec("bottle", leaf, material, color, height=height, cap=cap)
    cut = int(np.searchsorted(ys, 0.62 * H))
    spec.add("body", lathe(ys[:cut + 1], rs[:cut + 1]), color, "a cylindrical body")
    spec.add("neck", lathe(ys[cut:], rs[cut:]), color, "a long thin neck" if wine else "a short neck")
    spec.add("base", disk(0.0, rs[0]), color)
    if cap:
        cap_color = _choice(rng, ["red", "black", "white", "gold", "blue"])
        spec.attributes["cap_color"] = cap_color
        spec.add("cap", lathe([H, H + 0.07 * H], [neck_r * 1.15, neck_r * 1.15]), cap_color, f"a {cap_color} cap")
        spec.add("cap_top", disk(H + 0.07 * H, neck_r * 1.15), cap_color)
    return spec


def build_cup(rng, leaf="mug"):
    mug = leaf == "mug"
    material = _choice(rng, ["ceramic", "ceramic", "metal", "plastic"] if mug else ["porcelain", "ceramic"])
    color = pick_color(material, rng)
    r = rng.uniform(0.38, 0.45)
    if mug:  # straight cylinder, about as tall as wide, one big handle (ShapeNet mugs: height ~ diameter)
        H = r * rng.uniform(1.6, 2.3)
        taper = rng.uniform(0.92, 1.0)
    else:  # teacup: shallow flaring cup on a small foot, with a saucer
        H = r * rng.uniform(1.0, 1.3)
        taper = rng.uniform(0.55, 0.7)
    height = "tall" if H > 0.8 else "short"
    spec = _spec("cup", leaf, material, color, height=height, handle=True, saucer=not mug)
    y0 = 0.0 if mug else 0.06
    spec.add("wall", lathe([y0, y0 + H], [r * taper, r]), color, "straight sides" if mug else "flaring sides")
    spec.add("inside", lathe([y0 + 0.05 * H, y0 + H], [r * taper * 0.9, r * 0.94]), color)
    spec.add("rim", disk(y0 + H, r, inner=r * 0.94), color)  # the lip and the inner floor: a mesh has both
    spec.add("inner_bottom", disk(y0 + 0.05 * H, r * taper * 0.9), color)
    spec.add("bottom", disk(y0, r * taper), color, "a flat bottom" if mug else None)
    hr = 0.7 if mug else 0.4
    _handle_pair(spec, y0 + (0.5 - hr / 2) * H, y0 + (0.5 + hr / 2) * H, r * (0.97 if mug else 0.85), color, 1,
                 "a handle on one side" if mug else "a small curved handle", thickness=0.28 if mug else 0.16)
    if not mug:
        spec.add("saucer", disk(0.02, r * 1.5), color, "a saucer underneath")
        spec.add("saucer_rim", lathe([0.02, 0.06], [r * 1.5, r * 1.6]), color)
    return spec


def build_bowl(rng, leaf="serving bowl"):
    material = _choice(rng, ["ceramic", "porcelain", "wooden", "stone", "metal"])
    color = pick_color(material, rng)
    depth = _choice(rng, ["deep", "shallow"])
    foot = leaf == "footed bowl"
    R = rng.uniform(0.9, 1.1)
    H = R * (rng.uniform(0.5, 0.65) if depth == "deep" else rng.uniform(0.28, 0.38))
    t = np.linspace(0, 1, 30)
    base_r = 0.35 if foot else 0.5
    rs = R * (base_r + (1 - base_r) * np.sin(t * np.pi / 2))
    fh = 0.25 * H if foot else 0.0
    ys = fh + H * (1 - np.cos(t * np.pi / 2))
    spec = _spec("bowl", leaf, material, color, depth=depth, foot=foot,
                 pattern="blue and white" if material == "porcelain" else "plain")
    stripe = (COLORS["blue"], H / 5) if material == "porcelain" else None
    spec.add("body", lathe(ys, rs), color, "steep curved sides" if depth == "deep" else "a wide shallow body",
             stripe=stripe)
    spec.add("inside", lathe(ys[1:] + 0.02, rs[1:] * 0.95), color)
    spec.add("bottom", disk(fh, rs[0]), color)
    if foot:
        spec.add("foot", lathe([0, fh * 0.3, fh], [rs[0] * 0.9, rs[0] * 0.55, rs[0] * 0.6]), color,
                 "a tall round foot")
        spec.add("foot_base", disk(0.0, rs[0] * 0.9), color)
    return spec


def build_jar(rng, leaf="storage jar"):
    ginger = leaf == "ginger jar"
    material = _choice(rng, ["porcelain", "ceramic"] if ginger else ["ceramic", "stone", "glass"])
    color = pick_color(material, rng)
    R = rng.uniform(0.45, 0.55)
    H = rng.uniform(0.95, 1.2) if ginger else rng.uniform(0.8, 1.1)
    if ginger:  # bulbous shoulder, short neck, domed lid
        ys, rs = smooth_profile([0, 0.3 * H, 0.65 * H, 0.9 * H, H], [R * 0.6, R * 0.9, R, R * 0.55, R * 0.48])
    else:  # storage jar: straight cylinder, wide mouth, flat lid
        ys, rs = smooth_profile([0, 0.1 * H, 0.85 * H, H], [R * 0.85, R * 0.9, R * 0.9, R * 0.8])
    lid = True if ginger else _choice(rng, [True, False])
    spec = _spec("jar", leaf, material, color, lid=lid,
                 pattern="blue and white" if material == "porcelain" else "plain")
    spec.add("body", lathe(ys, rs), color, "a wide round body" if ginger else "straight cylindrical sides",
             stripe=(COLORS["blue"], H / 6) if material == "porcelain" else None)
    spec.add("base", disk(0.0, rs[0]), color)
    if lid and ginger:
        spec.add("lid", lathe([H, H + 0.1, H + 0.16], [R * 0.52, R * 0.35, 0.04]), color, "a domed lid")
        spec.add("knob", ellipsoid([0, H + 0.18, 0], [0.05, 0.04, 0.05]), color)
    elif lid:
        spec.add("lid", lathe([H, H + 0.04, H + 0.04], [R * 0.82, R * 0.82, 0.0]), color, "a flat lid")
    return spec


def build_ding(rng, leaf="tripod ding"):
    """A ding: the bronze ritual cauldron of Chinese antiquity (round on three legs, or square on four)."""
    color = pick_color("bronze", rng)
    R = rng.uniform(0.5, 0.6)
    leg_h = rng.uniform(0.35, 0.55)
    body_h = rng.uniform(0.45, 0.6)
    form = "round" if leaf == "tripod ding" else "square"
    spec = _spec("ding", leaf, "bronze", color, form=form, legs=3 if form == "round" else 4)
    if form == "round":
        ys, rs = smooth_profile([leg_h, leg_h + 0.3 * body_h, leg_h + body_h], [R * 0.55, R * 0.95, R])
        spec.add("body", lathe(ys, rs), color, "a deep round body")
        spec.add("bottom", disk(leg_h, R * 0.55), color)
        feet = [(R * 0.55 * np.cos(a), R * 0.55 * np.sin(a)) for a in np.arange(3) * 2 * np.pi / 3]
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


def build_chair(rng, leaf="side chair"):
    arms = leaf == "armchair"
    material = _choice(rng, ["wooden", "wooden", "metal", "plastic"] + (["fabric"] if arms else []))
    color = pick_color(material, rng)
    back = _choice(rng, ["solid", "slatted"]) if not arms else "solid"
    back_h = _choice(rng, ["tall", "short"])
    legs = "thin" if material == "metal" else _choice(rng, ["thin", "thick"])
    w = rng.uniform(0.55, 0.7) if arms else rng.uniform(0.42, 0.5)
    d, seat_y = rng.uniform(0.48, 0.56), rng.uniform(0.4, 0.46)
    bh = rng.uniform(0.45, 0.6) if back_h == "tall" else rng.uniform(0.3, 0.38)
    lr = 0.022 if legs == "thin" else 0.04
    st = 0.12 if arms and material == "fabric" else 0.05  # upholstered armchairs have a thick cushion
    spec = _spec("chair", leaf, material, color, back=back, arms=arms, back_height=back_h, legs=legs)
    spec.add("seat", box([0, seat_y, 0], [w, st, d]), color, "a square seat" if st < 0.1 else "a thick cushioned seat")
    for i, (sx, sz) in enumerate([(-1, -1), (1, -1), (-1, 1), (1, 1)]):
        x, z = sx * (w / 2 - lr), sz * (d / 2 - lr)
        spec.add("leg", tube([x, 0, z], [x, seat_y - st / 2, z], lr), color, f"four {legs} legs" if i == 0 else None)
    bz = -d / 2 + 0.02  # the back is at -z, the chair faces +z
    tilt = rng.uniform(0.0, 0.12)
    if back == "solid":
        spec.add("back", box([0, seat_y + bh / 2, bz - tilt / 2], [w, bh, 0.05]), color, f"a {back_h} solid backrest")
    else:
        n_slats = int(rng.integers(3, 6))
        spec.attributes["slats"] = n_slats
        spec.add("back", box([0, seat_y + bh - 0.04, bz], [w, 0.08, 0.04]), color,
                 f"{count_word(n_slats)} vertical slats in the back")
        for k in range(n_slats):
            x = -w / 2 + 0.05 + k * (w - 0.1) / max(n_slats - 1, 1)
            spec.add("slat", tube([x, seat_y, bz], [x, seat_y + bh - 0.08, bz], 0.015), color)
        for sx in (-1, 1):
            spec.add("post", tube([sx * (w / 2 - lr), seat_y, bz], [sx * (w / 2 - lr), seat_y + bh, bz], lr), color)
    if arms:
        for k, sx in enumerate((-1, 1)):
            ax = sx * (w / 2 - 0.04)
            spec.add("arm", box([ax, seat_y + 0.22, 0], [0.08, 0.05, d * 0.95]), color,
                     "armrests on both sides" if k == 0 else None)
            spec.add("arm_side", box([ax, seat_y + 0.1, 0], [0.06, 0.2, d * 0.8]), color)
    return spec


def build_stool(rng, leaf="bar stool"):
    bar = leaf == "bar stool"
    material = _choice(rng, ["wooden", "metal", "plastic"] if bar else ["wooden", "fabric"])
    color = pick_color(material, rng)
    H = rng.uniform(0.72, 0.85) if bar else rng.uniform(0.3, 0.42)
    R = rng.uniform(0.17, 0.21) if bar else rng.uniform(0.25, 0.32)
    n_legs = _choice(rng, [3, 4]) if bar else 4
    spec = _spec("stool", leaf, material, color, legs=n_legs, height="tall" if bar else "short")
    if bar:
        spec.add("seat", lathe([H - 0.05, H - 0.05, H, H], [0, R, R, 0]), color, "a round seat")
        for k in range(n_legs):
            a = 2 * np.pi * k / n_legs
            spec.add("leg", tube([1.35 * R * np.cos(a), 0, 1.35 * R * np.sin(a)],
                                 [0.8 * R * np.cos(a), H - 0.05, 0.8 * R * np.sin(a)], 0.02), color,
                     f"{count_word(n_legs)} splayed legs" if k == 0 else None)
        spec.attributes["footrest"] = True
        spec.add("footrest", torus_arc([0, 0.3 * H, 0], 1.2 * R, 0.012, [1, 0, 0], [0, 0, 1], 0, 2 * np.pi), color,
                 "a ring footrest")
    else:  # footstool: a low padded box on four short legs
        top_h = rng.uniform(0.12, 0.18)
        spec.add("cushion", box([0, H - top_h / 2, 0], [2 * R, top_h, 1.6 * R]), color, "a padded top")
        for i, (sx, sz) in enumerate([(-1, -1), (1, -1), (-1, 1), (1, 1)]):
            spec.add("leg", tube([sx * (R - 0.03), 0, sz * (0.8 * R - 0.03)],
                                 [sx * (R - 0.03), H - top_h, sz * (0.8 * R - 0.03)], 0.025), color,
                     "four short legs" if i == 0 else None)
    return spec


def build_bench(rng, leaf="park bench"):
    park = leaf == "park bench"
    material = _choice(rng, ["wooden", "wooden", "metal"] if park else ["wooden", "stone", "metal"])
    color = pick_color(material, rng)
    L = rng.uniform(1.4, 1.9)
    d = rng.uniform(0.4, 0.5) if park else rng.uniform(0.32, 0.42)
    seat_y = rng.uniform(0.42, 0.48)
    spec = _spec("bench", leaf, material, color, backrest=park, size="long" if L > 1.65 else "short")
    if park:  # slatted seat and backrest on two cast side frames with armrests
        for k in range(4):
            z = -d / 2 + (k + 0.5) * d / 4
            spec.add("seat_slat", box([0, seat_y, z], [L, 0.03, d / 4 * 0.8]), color, "a slatted seat" if k == 0 else None)
        bh = rng.uniform(0.35, 0.45)
        for k in range(3):
            y = seat_y + 0.08 + (k + 0.5) * bh / 3
            spec.add("back_slat", box([0, y, -d / 2 - 0.03], [L, bh / 3 * 0.75, 0.03]), color,
                     "a backrest" if k == 0 else None)
        frame = _choice(rng, ["black", "grey", "dark green"])
        spec.attributes["frame_color"] = frame
        for k, sx in enumerate((-1, 1)):
            x = sx * (L / 2 - 0.08)
            spec.add("frame", tube([x, 0, d / 2 - 0.03], [x, seat_y, d / 2 - 0.03], 0.03), frame,
                     f"{frame} metal side frames" if k == 0 else None)
            spec.add("frame", tube([x, 0, -d / 2], [x, seat_y + bh + 0.08, -d / 2 - 0.05], 0.03), frame)
            spec.add("arm", box([x, seat_y + 0.22, 0], [0.05, 0.04, d]), frame, "armrests at both ends" if k == 0 else None)
    else:  # backless: one thick plank on two slab or four-leg supports
        t = rng.uniform(0.05, 0.09)
        spec.add("top", box([0, seat_y - t / 2, 0], [L, t, d]), color, "a long flat seat")
        support = _choice(rng, ["slab", "legs"])
        spec.attributes["support"] = support
        if support == "slab":
            for k, sx in enumerate((-1, 1)):
                spec.add("slab", box([sx * (L / 2 - 0.15), (seat_y - t) / 2, 0], [0.06, seat_y - t, d * 0.9]), color,
                         "two slab supports" if k == 0 else None)
        else:
            for i, (sx, sz) in enumerate([(-1, -1), (1, -1), (-1, 1), (1, 1)]):
                spec.add("leg", tube([sx * (L / 2 - 0.1), 0, sz * (d / 2 - 0.05)],
                                     [sx * (L / 2 - 0.1), seat_y - t, sz * (d / 2 - 0.05)], 0.03), color,
                         "four legs" if i == 0 else None)
    return spec


def _table(rng, leaf, category, H, top_shape):
    material = _choice(rng, ["wooden", "wooden", "metal", "stone", "glass"])
    color = pick_color(material, rng)
    support = _choice(rng, ["four legs", "four legs", "pedestal"]) if top_shape in ("round", "square") else "four legs"
    spec = _spec(category, leaf, material, color, top=top_shape, support=support)
    t = rng.uniform(0.04, 0.07)
    if top_shape == "round":
        R = rng.uniform(0.5, 0.65) if category == "dining table" else rng.uniform(0.4, 0.55)
        spec.add("top", lathe([H - t, H - t, H, H], [0.0, R, R, 0.0]), color, "a round top")
        half = (R * 0.62, R * 0.62)
    else:
        W = rng.uniform(1.5, 2.0) if top_shape == "rectangular" else rng.uniform(0.8, 1.1)
        D = rng.uniform(0.8, 0.95) if top_shape == "rectangular" else W
        spec.add("top", box([0, H - t / 2, 0], [W, t, D]), color, f"a {top_shape} top")  # long side along x
        half = (W / 2 - 0.07, D / 2 - 0.07)
    if support == "four legs":
        lr = rng.uniform(0.025, 0.045)
        for i, (sx, sz) in enumerate([(-1, -1), (1, -1), (-1, 1), (1, 1)]):
            spec.add("leg", tube([sx * half[0], 0, sz * half[1]], [sx * half[0], H - t, sz * half[1]], lr), color,
                     "four legs" if i == 0 else None)
        if category == "coffee table" and rng.random() < 0.5:
            spec.attributes["shelf"] = True
            spec.add("shelf", box([0, 0.12, 0], [2 * half[0], 0.03, 2 * half[1]]), color, "a lower shelf")
    else:
        spec.add("pedestal", tube([0, 0.03, 0], [0, H - t, 0], 0.06), color, "a single central leg")
        spec.add("foot", lathe([0, 0.03, 0.03], [0.32, 0.32, 0.0]), color, "a round base")
    return spec


def build_dining_table(rng, leaf="rectangular dining table"):
    return _table(rng, leaf, "dining table", rng.uniform(0.72, 0.78), "round" if leaf.startswith("round") else "rectangular")


def build_coffee_table(rng, leaf="square coffee table"):
    return _table(rng, leaf, "coffee table", rng.uniform(0.38, 0.46), "round" if leaf.startswith("round") else "square")


def build_bathtub(rng, leaf="built-in bathtub"):
    claw = leaf == "clawfoot bathtub"
    material = _choice(rng, ["ceramic", "ceramic", "metal"] if claw else ["ceramic", "plastic"])
    color = pick_color(material, rng) if material != "ceramic" else _choice(rng, ["white", "white", "beige"])
    L, W = rng.uniform(1.5, 1.8), rng.uniform(0.7, 0.85)
    H = rng.uniform(0.5, 0.62)
    spec = _spec("bathtub", leaf, material, color, size="long" if L > 1.65 else "short")
    if claw:  # free-standing oval tub on four feet: a stretched surface of revolution, long axis along x
        foot_h = rng.uniform(0.1, 0.15)
        ys, rs = smooth_profile([0, 0.3, 0.8, 1.0], [0.55, 0.85, 0.97, 1.0])
        prim, area = lathe(ys * (H - foot_h) + foot_h, rs)
        stretch = np.array([L / 2, 1.0, W / 2])

        def outer(n, r, prim=prim):
            return prim(n, r) * stretch

        spec.add("tub", (outer, area * L * W / 4 * 1.3), color, "a deep oval basin")
        inner_prim, inner_area = lathe(ys[1:] * (H - foot_h - 0.06) + foot_h + 0.06, rs[1:] * 0.92)

        def inner(n, r, prim=inner_prim):
            return prim(n, r) * stretch

        spec.add("inside", (inner, inner_area * L * W / 4), color)
        rim_prim, rim_area = disk(H, 1.0, inner=0.9)
        spec.add("rim", (lambda n, r, p=rim_prim: p(n, r) * stretch, rim_area * L * W / 4), color, "a rolled rim")
        foot_color = _choice(rng, ["gold", "black", "white"])
        spec.attributes["foot_color"] = foot_color
        for i, (sx, sz) in enumerate([(-1, -1), (1, -1), (-1, 1), (1, 1)]):
            spec.add("foot", ellipsoid([sx * L * 0.32, foot_h * 0.5, sz * W * 0.3], [0.05, foot_h * 0.6, 0.05]),
                     foot_color, f"four {foot_color} claw feet" if i == 0 else None)
    else:  # built-in: a rectangular block with a rounded basin sunk into it
        spec.add("shell", box([0, H / 2, 0], [L, H, W]), color, "a rectangular outer shell")
        ys, rs = smooth_profile([0.1, 0.25, H - 0.02], [0.55, 0.85, 0.95])
        prim, area = lathe(ys, rs)
        stretch = np.array([L / 2 * 0.9, 1.0, W / 2 * 0.85])
        spec.add("basin", (lambda n, r, p=prim: p(n, r) * stretch, area * L * W / 4), color, "a sunken basin")
        spec.add("basin_floor", (lambda n, r, p=disk(0.1, 0.55)[0]: p(n, r) * stretch, 0.3 * L * W), color)
        if rng.random() < 0.5:
            spec.attributes["tap"] = True
            spec.add("tap", tube([L / 2 - 0.1, H, 0], [L / 2 - 0.1, H + 0.15, 0], 0.02), "grey", "a tap at one end")
    return spec


def build_toilet(rng, leaf="close-coupled toilet"):
    wall = leaf == "wall-hung toilet"
    material = "ceramic"
    color = _choice(rng, ["white", "white", "beige", "black"])
    bowl_y = rng.uniform(0.38, 0.44)
    bw, bd = rng.uniform(0.36, 0.42), rng.uniform(0.5, 0.6)
    spec = _spec("toilet", leaf, material, color, lid=_choice(rng, [True, False]))
    # bowl: an oval cup, long axis along z, the cistern at -z
    ys, rs = smooth_profile([bowl_y - 0.22, bowl_y - 0.1, bowl_y], [0.55, 0.85, 1.0])
    prim, area = lathe(ys, rs)
    stretch = np.array([bw / 2, 1.0, bd / 2])
    cz = 0.06
    spec.add("bowl", (lambda n, r, p=prim: p(n, r) * stretch + [0, 0, cz], area * bw * bd / 4), color,
             "an oval bowl")
    ring, ring_area = disk(bowl_y + 0.02, 1.0, inner=0.62)
    spec.add("seat", (lambda n, r, p=ring: p(n, r) * stretch + [0, 0, cz], ring_area * bw * bd / 4), color,
             "a seat ring")
    if spec.attributes["lid"]:
        up = rng.random() < 0.5
        spec.attributes["lid_up"] = up
        if up:
            spec.add("lid", box([0, bowl_y + 0.25, -bd / 2 + cz - 0.02], [bw, 0.45, 0.03]), color, "an open lid")
        else:
            lid, lid_area = disk(bowl_y + 0.05, 1.0)
            spec.add("lid", (lambda n, r, p=lid: p(n, r) * stretch + [0, 0, cz], lid_area * bw * bd / 4), color,
                     "a closed lid")
    tank_h = rng.uniform(0.3, 0.4)
    if wall:  # bowl hangs from a flat wall panel / concealed cistern; nothing touches the floor in front
        spec.add("panel", box([0, bowl_y + 0.1, -bd / 2 + cz - 0.08], [bw * 1.1, 0.55 + bowl_y, 0.12]), color,
                 "a flat wall panel behind it")
        spec.add("neck", box([0, bowl_y - 0.15, -bd / 2 + cz + 0.05], [bw * 0.5, 0.12, 0.2]), color)
    else:  # close-coupled: pedestal to the floor and a cistern box on top of the back
        spec.add("pedestal", lathe([0.0, bowl_y - 0.2], [0.16, 0.12]), color, "a pedestal base")
        spec.add("tank", box([0, bowl_y + tank_h / 2, -bd / 2 + cz - 0.02], [bw * 1.05, tank_h, 0.18]), color,
                 "a cistern at the back")
    return spec


def build_lamp(rng, leaf="floor lamp"):
    floor = leaf == "floor lamp"
    material = _choice(rng, ["metal", "metal", "wooden"])
    color = pick_color(material, rng)
    shade_color = _choice(rng, ["white", "beige", "red", "green", "black"])
    shade = _choice(rng, ["cone", "cylinder"])
    H = rng.uniform(1.5, 1.8) if floor else rng.uniform(0.45, 0.6)
    sr = 0.22 if floor else 0.16
    sh = 0.3 if floor else 0.2
    spec = _spec("lamp", leaf, material, color, shade=shade, shade_color=shade_color,
                 height="tall" if floor else "short")
    spec.add("base", lathe([0, 0.04, 0.04], [sr * 0.9, sr * 0.9, 0.0]), color, "a round base")
    if floor or rng.random() < 0.5:
        spec.add("pole", tube([0, 0.04, 0], [0, H - sh * 0.5, 0], 0.02 if floor else 0.015), color, "a thin pole")
        top = np.array([0.0, H, 0.0])
    else:  # an articulated desk lamp: two arms and a tilted shade
        spec.attributes["arm"] = True
        elbow = np.array([0.05, H * 0.55, 0.0])
        head = np.array([0.28, H * 0.85, 0.0])
        spec.add("arm", tube([0, 0.04, 0], elbow, 0.012), color, "a jointed arm")
        spec.add("arm", tube(elbow, head, 0.012), color)
        top = head + [0.0, sh * 0.4, 0.0]
    top_r = sr * (0.55 if shade == "cone" else 1.0)
    prim, area = lathe([-sh, 0.0], [sr, top_r])
    spec.add("shade", (lambda n, r, p=prim, t=top: p(n, r) + t, area), shade_color,
             f"a {shade_color} {shade}-shaped shade")
    return spec


def build_piano(rng, leaf="grand piano"):
    grand = leaf == "grand piano"
    material = "wooden"
    color = _choice(rng, ["black", "black", "brown", "white"])
    spec = _spec("piano", leaf, material, color)
    if grand:  # a curved case (long along z) on three legs, keyboard at the front (+z)
        L, W, case_h, leg_h = rng.uniform(1.5, 2.0), rng.uniform(1.4, 1.55), 0.3, rng.uniform(0.6, 0.68)
        # outline: straight left side, curved right side narrowing to the tail (-z)
        zs = np.linspace(0, 1, 12)
        right = W / 2 - (W * 0.55) * (zs ** 1.6)
        outline = np.array([[W / 2 - 0.0, L / 2]] + [[right[k], L / 2 - zs[k] * L] for k in range(12)] +
                           [[-W / 2, -L / 2], [-W / 2, L / 2]])
        spec.add("case", _prism(outline, leg_h, leg_h + case_h), color, "a curved wooden case")
        for i, (x, z) in enumerate([(-W / 2 + 0.1, L / 2 - 0.15), (W / 2 - 0.1, L / 2 - 0.15), (-W * 0.1, -L / 2 + 0.25)]):
            spec.add("leg", tube([x, 0, z], [x, leg_h, z], 0.05), color, "three legs" if i == 0 else None)
        spec.add("keys", box([0, leg_h + 0.05, L / 2 + 0.12], [W * 0.95, 0.04, 0.22]), "white", "a keyboard at the front")
    else:  # upright: a tall box, long along x, keyboard shelf at the front (+z)
        W, D, H = rng.uniform(1.4, 1.6), rng.uniform(0.55, 0.65), rng.uniform(1.1, 1.35)
        spec.add("case", box([0, H / 2 + 0.05, -0.1], [W, H - 0.1, D - 0.2]), color, "a tall upright case")
        spec.add("keys", box([0, 0.72, D / 2 - 0.15], [W * 0.9, 0.05, 0.3]), "white", "a keyboard at the front")
        for k, sx in enumerate((-1, 1)):
            spec.add("cheek", box([sx * (W / 2 - 0.04), 0.4, D / 2 - 0.2], [0.08, 0.8, 0.25]), color)
            spec.add("toe", box([sx * (W / 2 - 0.04), 0.03, D / 2 - 0.15], [0.07, 0.06, 0.35]), color,
                     "two front legs" if k == 0 else None)
    return spec


def _prism(outline_xz: np.ndarray, y0: float, y1: float) -> Tuple[Sampler, float]:
    """A vertical prism over a closed polygon in the x-z plane: side walls plus top and bottom faces."""
    poly = np.asarray(outline_xz, float)
    a, b = poly, np.roll(poly, -1, axis=0)
    seg = np.linalg.norm(b - a, axis=1)
    side_areas = seg * (y1 - y0)
    # triangle fan from the centroid for the caps (the outlines used are star-shaped about it)
    c = poly.mean(0)
    tri = 0.5 * np.abs((a[:, 0] - c[0]) * (b[:, 1] - c[1]) - (b[:, 0] - c[0]) * (a[:, 1] - c[1]))
    cap_area = float(tri.sum())
    total = side_areas.sum() + 2 * cap_area

    def sample(n, rng):
        n_side = int(round(n * side_areas.sum() / total))
        k = rng.choice(len(seg), size=n_side, p=side_areas / side_areas.sum())
        t = rng.random(n_side)[:, None]
        xz = a[k] + t * (b[k] - a[k])
        side = np.stack([xz[:, 0], y0 + rng.random(n_side) * (y1 - y0), xz[:, 1]], 1)
        m = n - n_side
        j = rng.choice(len(tri), size=m, p=tri / tri.sum())
        u, v = rng.random(m), rng.random(m)
        flip = u + v > 1
        u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
        pxz = c + u[:, None] * (a[j] - c) + v[:, None] * (b[j] - c)
        ys = np.where(rng.random(m) < 0.5, y0, y1)
        return np.concatenate([side, np.stack([pxz[:, 0], ys, pxz[:, 1]], 1)])

    return sample, float(total)


def _plane_quad(p0, p1, p2) -> Tuple[Sampler, float]:
    """A flat parallelogram spanned from ``p0`` by ``p1 - p0`` and ``p2 - p0``."""
    p0, e1, e2 = np.asarray(p0, float), np.asarray(p1, float) - p0, np.asarray(p2, float) - p0

    def sample(n, rng):
        u, v = rng.random((n, 1)), rng.random((n, 1))
        return p0 + u * e1 + v * e2
    return sample, float(np.linalg.norm(_cross(e1, e2)))


def build_rifle(rng, leaf="hunting rifle"):
    """A rifle lying along z (muzzle at +z), thin in x, as ShapeNet stores them."""
    hunting = leaf == "hunting rifle"
    material = "wooden" if hunting else _choice(rng, ["metal", "plastic"])
    color = _choice(rng, ["brown", "beige"]) if hunting else _choice(rng, ["black", "grey", "dark green"])
    metal = "black" if hunting else color
    L = rng.uniform(1.0, 1.25)
    spec = _spec("rifle", leaf, material, color, scope=hunting or rng.random() < 0.3)
    y = 0.0
    spec.add("barrel", tube([0, y + 0.03, 0.05 * L], [0, y + 0.03, L * 0.55], 0.015), metal, "a long barrel")
    spec.add("receiver", box([0, y + 0.02, -0.05 * L], [0.05, 0.08, 0.3 * L]), metal)
    if hunting:
        spec.add("stock", _taper_box([0, y - 0.02, -0.35 * L], [0.05, 0.1, 0.35 * L], [0.045, 0.16]), color,
                 "a wooden stock")
        spec.add("fore", box([0, y, 0.18 * L], [0.05, 0.05, 0.35 * L]), color)
    else:
        spec.add("stock", box([0, y - 0.01, -0.38 * L], [0.04, 0.12, 0.3 * L]), color, "a straight stock")
        spec.add("magazine", box([0, y - 0.1, 0.02 * L], [0.035, 0.16, 0.06]), metal, "a curved magazine")
        spec.add("grip", box([0, y - 0.07, -0.15 * L], [0.035, 0.11, 0.045]), metal, "a pistol grip")
        spec.add("handguard", box([0, y + 0.02, 0.18 * L], [0.05, 0.06, 0.22 * L]), color)
    if spec.attributes["scope"]:
        spec.add("scope", tube([0, y + 0.1, -0.1 * L], [0, y + 0.1, 0.12 * L], 0.022), "black", "a telescopic sight")
    return spec


def _taper_box(center, size, heights) -> Tuple[Sampler, float]:
    """A box whose height changes linearly along z: ``heights[1]`` at its -z end (a stock's butt), ``heights[0]``
    at +z."""
    prim, area = box([0, 0, 0], [size[0], 1.0, size[2]])
    c = np.asarray(center, float)
    h0, h1 = heights

    def sample(n, rng):
        p = prim(n, rng)
        t = (p[:, 2] / size[2]) + 0.5  # 0 at -z, 1 at +z
        p[:, 1] *= h1 + (h0 - h1) * t
        return p + c
    return sample, float(area * (h0 + h1) / 2)


def build_airplane(rng, leaf="airliner"):
    """An aeroplane: fuselage along z (nose at +z), wings along x, tail at -z."""
    jet = leaf == "airliner"
    material = "metal"
    color = _choice(rng, ["white", "white", "grey", "blue", "red"])
    L = rng.uniform(1.6, 2.0)
    r = L * (rng.uniform(0.055, 0.07) if jet else rng.uniform(0.05, 0.065))
    span = L * (rng.uniform(1.1, 1.35) if jet else rng.uniform(1.2, 1.45))
    spec = _spec("airplane", leaf, material, color, engines=2 if jet else 1, wings="swept" if jet else "straight")
    ys, rs = smooth_profile([-L / 2, -L * 0.42, -L * 0.2, L * 0.3, L * 0.45, L / 2],
                            [r * 0.15, r * 0.6, r, r, r * 0.7, r * 0.1])
    fus, fus_area = lathe(ys, rs)
    spec.add("fuselage", (lambda n, g, p=fus: p(n, g)[:, [0, 2, 1]], fus_area), color, "a long round fuselage")
    sweep = L * (0.18 if jet else 0.02)
    chord = L * (0.18 if jet else 0.14)
    wz = L * 0.05
    for k, sx in enumerate((-1, 1)):  # each wing: a thin quad from the root to the swept-back tip
        root = np.array([0.0, 0.0, wz])
        tip = np.array([sx * span / 2, r * 0.15, wz - sweep])
        spec.add("wing", _plane_quad(root + [0, 0, -chord / 2], tip + [0, 0, -chord / 4], root + [0, 0, chord / 2]),
                 color, ("two swept wings" if jet else "two straight wings") if k == 0 else None)
        spec.add("wing", _plane_quad(root + [0, 0, chord / 2], tip + [0, 0, chord / 4], tip + [0, 0, -chord / 4]), color)
        if jet:
            ex = sx * span * 0.18
            spec.add("engine", tube([ex, -r * 0.9, wz + chord * 0.1], [ex, -r * 0.9, wz + chord * 0.9], r * 0.35),
                     "grey", "two engines under the wings" if k == 0 else None)
        tail_root = np.array([0.0, r * 0.3, -L * 0.42])
        tail_tip = np.array([sx * span * 0.18, r * 0.3, -L * 0.48])
        spec.add("stabiliser", _plane_quad(tail_root + [0, 0, L * 0.05], tail_tip, tail_root - [0, 0, L * 0.05]), color,
                 "a tail plane" if k == 0 else None)
    spec.add("fin", _plane_quad([0, r * 0.5, -L * 0.38], [0, r * 0.5, -L * 0.5], [0, r * 0.5 + L * 0.15, -L * 0.5]),
             color, "a tall tail fin")
    if not jet:
        spec.add("propeller", _propeller([0, 0, L / 2 + 0.01], r * 2.6), "black", "a propeller on the nose")
    return spec


def _propeller(center, radius) -> Tuple[Sampler, float]:
    """Two thin crossed blades in the x-y plane at ``center``."""
    c = np.asarray(center, float)

    def sample(n, rng):
        t = rng.uniform(-1, 1, n) * radius
        w = rng.uniform(-0.08, 0.08, n) * radius
        pts = np.zeros((n, 3))
        horiz = rng.random(n) < 0.5
        pts[:, 0] = np.where(horiz, t, w)
        pts[:, 1] = np.where(horiz, w, t)
        return pts + c
    return sample, float(2 * 2 * radius * 0.16 * radius)


# leaf -> builder; category -> builder (scenes and the saliency chapter ask for a category)
CATEGORY_BUILDERS: Dict[str, Callable] = {
    "vase": build_vase, "bottle": build_bottle, "cup": build_cup, "bowl": build_bowl, "jar": build_jar,
    "ding": build_ding, "chair": build_chair, "stool": build_stool, "bench": build_bench,
    "dining table": build_dining_table, "coffee table": build_coffee_table, "bathtub": build_bathtub,
    "toilet": build_toilet, "lamp": build_lamp, "piano": build_piano, "rifle": build_rifle,
    "airplane": build_airplane,
}


# ShapeNet stores objects facing -z (chair backs, toilet cisterns and aeroplane tails at +z, piano keyboards
# and rifle muzzles at -z; measured on ../shared/data/real_shapes_dev). The builders above were written facing
# +z, so these are mirrored in z; a mug's handle points along z in ShapeNet, so cups swap x and z.
MIRROR_Z = frozenset({"chair", "toilet", "piano", "airplane", "rifle", "bench"})
SWAP_XZ = frozenset({"cup"})


def _transformed(spec: ShapeSpec, matrix: np.ndarray) -> ShapeSpec:
    for part in spec.parts:
        part.sampler = (lambda n, rng, f=part.sampler: f(n, rng) @ matrix)
    return spec


def build_leaf(leaf: str, rng: np.random.Generator) -> ShapeSpec:
    """One shape of ``leaf`` (a taxonomy leaf of the Elephant half), in ShapeNet's orientation."""
    from .taxonomy import leaf_path

    category = leaf_path(leaf)[2]
    spec = CATEGORY_BUILDERS[category](rng, leaf)
    if category in MIRROR_Z:
        return _transformed(spec, np.diag([1.0, 1.0, -1.0]))
    if category in SWAP_XZ:
        return _transformed(spec, np.array([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]]))
    return spec


def _random_leaf_builder(category: str) -> Callable[[np.random.Generator], ShapeSpec]:
    def build(rng: np.random.Generator) -> ShapeSpec:
        from .taxonomy import leaves_of

        leaves = leaves_of(category)
        return build_leaf(leaves[int(rng.integers(len(leaves)))], rng)
    return build


# category -> builder(rng) with a random leaf: what rooms and the saliency chapter use ("table" = dining table)
ARTEFACT_BUILDERS: Dict[str, Callable[[np.random.Generator], ShapeSpec]] = {
    **{c: _random_leaf_builder(c) for c in CATEGORY_BUILDERS}, "table": _random_leaf_builder("dining table"),
}

# real-world height in metres of each artefact when it is placed in a scene
SCENE_HEIGHT = {"chair": 0.9, "table": 0.75, "stool": 0.6, "lamp": 1.6, "vase": 0.4, "bottle": 0.3, "cup": 0.12,
                "bowl": 0.12, "jar": 0.35, "ding": 0.5, "bench": 0.8, "dining table": 0.75, "coffee table": 0.45,
                "piano": 1.2, "toilet": 0.8, "bathtub": 0.6, "rifle": 0.3, "airplane": 0.4}


def object_points(spec: ShapeSpec, n: int, rng: np.random.Generator):
    """Sample a spec and normalise it to the unit sphere (y up): xyz, rgb, part_id."""
    xyz, rgb, pid = sample_spec(spec, n, rng)
    xyz, _, _ = normalize_unit_sphere(xyz)
    return xyz, rgb, pid
