"""Indoor rooms in the spirit of S3DIS: floor, walls, several objects and clutter (y up).

A room is a list of placed objects (artefact builders from :mod:`shapes` plus a few room-only
ones: bookcase, board, sofa, cabinet), each scaled to a plausible real height and placed on the
floor or on a table. Walls and floor are the "support" fragments of :mod:`redundancy` (flag 2):
large, similar from room to room, and therefore the main source of saliency dilution in scenes.
The front wall and the ceiling are left out so the room can be looked into (S3DIS has them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

from .redundancy import clutter_points, duplicate_points
from .shapes import (ARTEFACT_BUILDERS, COLORS, SCENE_HEIGHT, ShapeSpec, _choice, allocate, box, pick_color,
                     sample_spec)


def build_bookcase(rng):
    color = pick_color("wooden", rng)
    shelves = int(rng.integers(3, 6))
    spec = ShapeSpec("bookcase", {"color": color, "shelves": shelves})
    W, H, D = 0.9, 1.9, 0.35
    spec.add("frame", box([0, H / 2, -D / 2 + 0.01], [W, H, 0.02]), color)
    for sx in (-1, 1):
        spec.add("side", box([sx * W / 2, H / 2, 0], [0.03, H, D]), color)
    for k in range(shelves + 1):
        spec.add("shelf", box([0, k * H / shelves, 0], [W, 0.03, D]), color)
    for k in range(shelves):
        bc = _choice(rng, ["red", "blue", "green", "beige", "black"])
        spec.add("books", box([rng.uniform(-0.2, 0.2), k * H / shelves + 0.13, 0], [0.4, 0.22, D * 0.8]), bc)
    return spec


def build_board(rng):
    color = _choice(rng, ["white", "black", "green"])
    spec = ShapeSpec("board", {"color": color})
    spec.add("board", box([0, 0.6, 0], [1.8, 1.2, 0.03]), color)
    return spec


def build_sofa(rng):
    color = _choice(rng, ["grey", "brown", "blue", "red", "beige"])
    spec = ShapeSpec("sofa", {"color": color})
    W = rng.uniform(1.6, 2.2)
    spec.add("seat", box([0, 0.25, 0], [W, 0.3, 0.8]), color)
    spec.add("back", box([0, 0.6, -0.32], [W, 0.5, 0.16]), color)
    for sx in (-1, 1):
        spec.add("arm", box([sx * W / 2, 0.4, 0], [0.18, 0.45, 0.8]), color)
    return spec


def build_cabinet(rng):
    color = _choice(rng, ["grey", "white", "beige", "brown"])
    spec = ShapeSpec("cabinet", {"color": color})
    spec.add("body", box([0, 0.6, 0], [0.8, 1.2, 0.55]), color)
    spec.add("handle", box([0.3, 0.7, 0.29], [0.03, 0.2, 0.03]), "black")
    return spec


ROOM_OBJECTS = {"bookcase": (build_bookcase, 1.9), "board": (build_board, 1.2), "sofa": (build_sofa, 0.85),
                "cabinet": (build_cabinet, 1.2)}

# per room leaf: (width range, depth range, list of (object, min count, max count)); the two leaves of a room
# category share its function but differ in size and furniture, the way S3DIS rooms of one type vary
ROOM_RECIPES: Dict[str, Tuple[Tuple[float, float], Tuple[float, float], List[Tuple[str, int, int]]]] = {
    "private office": ((3.0, 4.2), (3.0, 4.0), [("table", 1, 1), ("chair", 1, 2), ("bookcase", 1, 2), ("lamp", 0, 1),
                                                ("cup", 0, 1)]),
    "shared office": ((6.0, 9.0), (5.0, 7.0), [("table", 3, 5), ("chair", 3, 7), ("bookcase", 0, 2), ("cup", 0, 2),
                                               ("bottle", 0, 1)]),
    "photocopy room": ((2.5, 3.8), (2.5, 3.5), [("cabinet", 2, 4), ("table", 1, 1)]),
    "print room": ((3.5, 5.0), (3.0, 4.0), [("table", 2, 3), ("cabinet", 1, 2), ("bookcase", 1, 1), ("chair", 0, 1)]),
    "boardroom": ((5.0, 7.5), (4.0, 5.5), [("table", 1, 1), ("chair", 6, 10), ("board", 1, 1), ("bottle", 0, 3)]),
    "seminar room": ((6.0, 9.0), (5.0, 7.0), [("table", 3, 6), ("chair", 6, 12), ("board", 1, 2)]),
    "lecture hall": ((9.0, 13.0), (9.0, 12.0), [("chair", 12, 20), ("board", 1, 2), ("table", 1, 1)]),
    "assembly hall": ((9.0, 13.0), (8.0, 11.0), [("chair", 6, 12), ("piano", 0, 1), ("bench", 2, 4)]),
    "corridor": ((9.0, 13.0), (1.6, 2.2), [("stool", 0, 1), ("cabinet", 0, 1), ("board", 0, 1)]),
    "gallery hallway": ((8.0, 11.0), (2.8, 3.6), [("vase", 2, 3), ("board", 1, 2), ("bench", 1, 2)]),
    "entrance lobby": ((6.0, 9.0), (6.0, 9.0), [("sofa", 1, 2), ("table", 1, 1), ("vase", 1, 2), ("bench", 0, 1)]),
    "waiting area": ((4.0, 6.0), (4.0, 5.5), [("chair", 4, 8), ("coffee table", 1, 1), ("sofa", 0, 1)]),
    "shelf storeroom": ((2.5, 4.0), (2.5, 4.0), [("bookcase", 3, 5), ("jar", 0, 2)]),
    "cabinet storeroom": ((2.5, 4.0), (2.5, 4.0), [("cabinet", 3, 5), ("jar", 0, 3), ("bottle", 0, 2)]),
    "restroom": ((3.0, 4.5), (2.5, 3.5), [("toilet", 2, 4), ("cabinet", 1, 1)]),
    "washroom": ((2.2, 3.2), (2.0, 3.0), [("toilet", 1, 1), ("bathtub", 1, 1), ("cabinet", 0, 1)]),
    "kitchenette": ((2.5, 3.5), (2.5, 3.5), [("cabinet", 2, 3), ("table", 0, 1), ("cup", 1, 3), ("bottle", 0, 2)]),
    "dining pantry": ((4.5, 6.5), (4.0, 6.0), [("table", 2, 3), ("chair", 4, 8), ("cabinet", 1, 1), ("bowl", 0, 2)]),
    "sofa lounge": ((4.5, 7.0), (4.0, 6.0), [("sofa", 2, 3), ("coffee table", 1, 1), ("lamp", 1, 2)]),
    "reading lounge": ((4.0, 6.0), (4.0, 5.5), [("bookcase", 2, 3), ("chair", 2, 4), ("lamp", 1, 2),
                                                ("coffee table", 0, 1)]),
}

ON_TABLE = {"cup", "bottle", "bowl"}


@dataclass
class PlacedObject:
    category: str
    spec: ShapeSpec
    scale: float
    offset: np.ndarray
    angle: float
    area: float


def _place(spec: ShapeSpec, category: str, height: float, x: float, y: float, z: float, angle: float):
    # object units -> metres: heights of the builders are ~1, scale by the requested real height
    raw_h = max(1e-6, _spec_height(spec))
    scale = height / raw_h
    area = sum(p.area for p in spec.parts) * scale ** 2
    return PlacedObject(category, spec, scale, np.array([x, y, z]), angle, area)


def _spec_height(spec: ShapeSpec) -> float:
    rng = np.random.default_rng(0)
    pts = np.concatenate([p.sampler(8, rng) for p in spec.parts])
    return float(pts[:, 1].max() - min(0.0, pts[:, 1].min()))


def build_room(leaf: str, rng: np.random.Generator):
    """Draw one room of a taxonomy leaf: returns (attributes, placed objects, room size (W, H, D))."""
    (w0, w1), (d0, d1), recipe = ROOM_RECIPES[leaf]
    W, D = rng.uniform(w0, w1), rng.uniform(d0, d1)
    H = 3.0 if leaf not in ("lecture hall", "assembly hall") else 4.5
    wall_color = _choice(rng, ["white", "beige", "grey"])
    floor_color = _choice(rng, ["grey", "brown", "beige"])
    size = "large" if W * D > 25 else ("small" if W * D < 10 else "medium")
    placed: List[PlacedObject] = []
    tables: List[PlacedObject] = []
    for obj, lo, hi in recipe:
        count = int(rng.integers(lo, hi + 1))
        for _ in range(count):
            if obj in ROOM_OBJECTS:
                builder, height = ROOM_OBJECTS[obj]
                spec = builder(rng)
            else:
                spec = ARTEFACT_BUILDERS[obj](rng)
                height = SCENE_HEIGHT[obj] * rng.uniform(0.9, 1.1)
            if obj in ON_TABLE and tables:
                t = tables[int(rng.integers(len(tables)))]
                top = float(t.offset[1] + SCENE_HEIGHT["table"])
                x, y, z = t.offset[0] + rng.uniform(-0.3, 0.3), top, t.offset[2] + rng.uniform(-0.2, 0.2)
            elif obj in ("board", "bookcase", "cabinet"):
                x, y, z = rng.uniform(-W / 2 + 1, W / 2 - 1), 0.0 if obj != "board" else 0.9, -D / 2 + 0.3
            else:
                x, y, z = rng.uniform(-W / 2 + 0.5, W / 2 - 0.5), 0.0, rng.uniform(-D / 2 + 0.8, D / 2 - 0.4)
            p = _place(spec, obj, height, x, y, z, rng.uniform(0, 2 * np.pi) if obj in ("chair", "stool") else 0.0)
            placed.append(p)
            if obj == "table":
                tables.append(p)
    counts: Dict[str, int] = {}
    for p in placed:
        counts[p.category] = counts.get(p.category, 0) + 1
    attributes = {"size": size, "wall_color": wall_color, "floor_color": floor_color, "objects": counts,
                  "width_m": round(W, 2), "depth_m": round(D, 2)}
    return attributes, placed, (W, H, D)


def _rotate_y(pts: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return pts @ np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])


def sample_room(leaf: str, n: int, rng: np.random.Generator, redundancy=(0.30, 0.48), build_rng=None):
    """Sample one room as ``n`` points: xyz (metres), rgb, part_id (object index, -1 walls/clutter), flag.

    ``redundancy``: range of the share of flagged points (walls and floor ~80 % of it, clutter 10-20 %,
    ghosts 0-10 %). Returns (xyz, rgb, pid, flag, attributes, placed objects); ``attributes["box_m"]`` is the
    room's (W, H, D): rooms are normalised by that box, never by where the flagged points happen to fall.
    ``build_rng`` (default ``rng``) draws the room itself, so a separate stream keeps the room fixed while
    the redundancy changes.
    """
    attributes, placed, (W, H, D) = build_room(leaf, build_rng if build_rng is not None else rng)
    attributes["box_m"] = [round(float(W), 4), round(float(H), 4), round(float(D), 4)]
    total = float(rng.uniform(*redundancy))
    clutter_share = total * rng.uniform(0.1, 0.2)
    ghost_share = total * rng.uniform(0.0, 0.1)
    support_share = total - clutter_share - ghost_share
    n_support = int(round(n * support_share))
    n_clutter = int(round(n * clutter_share))
    n_ghost = int(round(n * ghost_share))
    n_obj = n - n_support - n_clutter - n_ghost
    xyz, rgb, pid, flag = [], [], [], []
    if placed:
        counts = allocate([p.area ** 0.75 for p in placed], n_obj)  # ^0.75: small objects keep some points
        for k, (p, c) in enumerate(zip(placed, counts)):
            if c == 0:
                continue
            pts, col, _ = sample_spec(p.spec, int(c), rng)
            pts = _rotate_y(pts * p.scale, p.angle) + p.offset
            xyz.append(pts); rgb.append(col); pid.append(np.full(c, k)); flag.append(np.zeros(c, np.int64))
    else:
        n_support += n_obj
    obj_xyz = np.concatenate(xyz) if xyz else np.zeros((0, 3))
    obj_rgb = np.concatenate(rgb) if rgb else np.zeros((0, 3))
    obj_pid = np.concatenate(pid) if pid else np.zeros(0, np.int64)
    # walls and floor
    wall_rgb, floor_rgb = np.asarray(COLORS[attributes["wall_color"]]), np.asarray(COLORS[attributes["floor_color"]])
    areas = np.array([W * D, W * H, D * H, D * H])
    counts = allocate(areas, n_support)
    surfaces = [box([0, 0, 0], [W, 0.0, D]), box([0, H / 2, -D / 2], [W, H, 0.0]),
                box([-W / 2, H / 2, 0], [0.0, H, D]), box([W / 2, H / 2, 0], [0.0, H, D])]
    for (sampler, _), c, col in zip(surfaces, counts, [floor_rgb, wall_rgb, wall_rgb, wall_rgb]):
        if c:
            xyz.append(sampler(int(c), rng)); rgb.append(np.clip(col + rng.normal(scale=0.03, size=(c, 3)), 0, 1))
            pid.append(np.full(c, -1)); flag.append(np.full(c, 2))
    if n_clutter:
        ref = obj_xyz if len(obj_xyz) else np.array([[-W / 2, 0, -D / 2], [W / 2, 1, D / 2]])
        p_, c_ = clutter_points(ref, n_clutter, rng, radius=0.35 * min(W, D))
        p_[:, 1] = np.abs(p_[:, 1])
        xyz.append(p_); rgb.append(c_); pid.append(np.full(n_clutter, -1)); flag.append(np.full(n_clutter, 3))
    if n_ghost:
        if len(obj_xyz):
            p_, c_, i_ = duplicate_points(obj_xyz, obj_rgb, obj_pid, n_ghost, rng)
            xyz.append(p_); rgb.append(c_); pid.append(i_); flag.append(np.full(n_ghost, 1))
        else:  # an empty room has nothing to ghost: the points become clutter
            xyz.append(rng.uniform(-1, 1, size=(n_ghost, 3)) * [W / 2, 1, D / 2] + [0, 1, 0])
            rgb.append(np.full((n_ghost, 3), 0.5)); pid.append(np.full(n_ghost, -1)); flag.append(np.full(n_ghost, 3))
    return (np.concatenate(xyz), np.concatenate(rgb), np.concatenate(pid).astype(np.int64),
            np.concatenate(flag).astype(np.int64), attributes, placed)
