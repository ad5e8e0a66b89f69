"""Read a user's 3-D shapes (meshes and point clouds) into clouds the benchmark's encoders understand.

One function per concern, so "add a mesh format" is one edit here:

* :func:`find_shapes`: files and folders -> the supported shape files, sorted (one clear error if none);
* :func:`read_shape`: one file -> ``(N, 3)`` xyz (or ``(N, 6)`` xyz + rgb in 0..1 when the file has
  colours), sampled, turned to y-up and normalised exactly like the generated benchmark;
* :func:`prepare_points`: the same conventions for an array you already hold.

Conventions (the same as ``data/README.md`` and :mod:`h2arn.data.shapes`):

* meshes (OBJ, PLY, OFF, STL, GLB, read with ``trimesh``) are sampled area-weighted with
  :func:`h2arn.data.shapes.triangles`, the generator's own sampler, seeded from the file's content
  (the same file always gives the same cloud);
* point clouds (XYZ/TXT: 3 or >= 6 whitespace- or comma-separated columns; NPY: ``(N, 3)`` or
  ``(N, >= 6)``; a PLY without faces) are used as they are (an OBJ/OFF/STL/GLB without faces is an error);
* **y is up**. ``up="z"`` rotates a z-up shape (most CAD/scan exports) to y-up first: the shared
  ModelNet40 PointNet's top-1 on real y-up shapes falls from 0.74 to 0.09 when they are given
  z-up (chapter 08), so the axis is never guessed;
* normalisation: :func:`h2arn.data.normalize_unit_sphere` (bounding-box centre, farthest point at 1);
* rgb is optional: xyz-only encoders never need it; an rgb encoder given an xyz-only shape gets a
  clear error from :func:`h2arn.encoders.tokens.build_input` instead of invented colours.

Every problem (unreadable file, empty mesh, NaN vertices, unknown extension) is one
:class:`ShapeReadError` naming the file and the fix.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from h2arn.encoders.weights import sha256_file

__all__ = ["MESH_SUFFIXES", "CLOUD_SUFFIXES", "SUPPORTED_SUFFIXES", "UP_AXES", "ShapeReadError", "find_shapes",
           "read_shape", "read_shapes", "prepare_points", "to_y_up", "file_digest"]

MESH_SUFFIXES = (".obj", ".ply", ".off", ".stl", ".glb")
CLOUD_SUFFIXES = (".xyz", ".txt", ".npy")
SUPPORTED_SUFFIXES = MESH_SUFFIXES + CLOUD_SUFFIXES
UP_AXES = ("y", "z")
DEFAULT_NUM_POINTS = 2048


class ShapeReadError(ValueError):
    """A shape file (or array) cannot be used; the message names it and says the fix."""


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes: the cache key of a shape (a renamed copy is the same shape)."""
    return sha256_file(path)


# --------------------------------------------------------------------------- finding files

def find_shapes(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Supported shape files among ``paths`` (files, or folders searched recursively), sorted, no duplicates."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in SUPPORTED_SUFFIXES
                            and not any(part.startswith(".") for part in q.relative_to(p).parts))
        elif p.is_file():
            if p.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise ShapeReadError(f"{p}: unsupported shape format {p.suffix or '(no extension)'!r}. Fix: pass "
                                     f"one of {', '.join(SUPPORTED_SUFFIXES)} (convert other formats with trimesh "
                                     "or MeshLab).")
            found.append(p)
        else:
            raise ShapeReadError(f"{p}: no such file or folder. Fix: check the path of --shapes.")
    unique = list(dict.fromkeys(q.resolve() for q in found))
    if not unique:
        raise ShapeReadError(f"{', '.join(map(str, paths))}: no shape files found (looked for "
                             f"{', '.join(SUPPORTED_SUFFIXES)}). Fix: point --shapes at a folder of meshes or clouds.")
    return unique


# --------------------------------------------------------------------------- conventions

def to_y_up(xyz: np.ndarray, up: str = "y") -> np.ndarray:
    """Rotate coordinates so that ``up`` becomes +y (right-handed: z-up ``(x, y, z)`` -> ``(x, z, -y)``)."""
    if up not in UP_AXES:
        raise ShapeReadError(f"up axis {up!r} is not supported. Fix: pass --up y (the benchmark's convention) "
                             "or --up z (CAD and scan exports).")
    if up == "y":
        return xyz
    return np.stack([xyz[:, 0], xyz[:, 2], -xyz[:, 1]], axis=1)


def prepare_points(points, up: str = "y", source: str = "array") -> np.ndarray:
    """An ``(N, 3)`` or ``(N, >=6)`` array -> float32 y-up, unit-sphere cloud (xyz, plus rgb 0..1 if given).

    rgb given in 0..255 is scaled to 0..1; columns after the sixth are dropped.
    """
    from .data import normalize_unit_sphere

    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or (arr.shape[1] != 3 and arr.shape[1] < 6):
        raise ShapeReadError(f"{source}: expected points of shape (N, 3) or (N, >=6) (x y z [r g b]), got "
                             f"{arr.shape}. Fix: export xyz (and optionally rgb) columns.")
    if arr.shape[0] < 1:
        raise ShapeReadError(f"{source}: holds no points. Fix: pass a non-empty shape.")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise ShapeReadError(f"{source}: {bad} point(s) have NaN or infinite coordinates or colours. Fix: repair "
                             "or re-export the shape.")
    xyz, _, scale = normalize_unit_sphere(to_y_up(arr[:, :3], up))
    if scale <= 0 or not np.isfinite(xyz).all() or np.ptp(arr[:, :3], axis=0).max() == 0:
        raise ShapeReadError(f"{source}: all points coincide (zero extent). Fix: pass a real shape.")
    if arr.shape[1] >= 6:
        rgb = arr[:, 3:6]
        if rgb.max() > 1.5:          # 0..255 (0..1 colours never get there, even after interpolation)
            rgb = rgb / 255.0
        return np.concatenate([xyz, np.clip(rgb, 0.0, 1.0)], axis=1).astype(np.float32)
    return xyz.astype(np.float32)


# --------------------------------------------------------------------------- reading

def read_shape(path: str | os.PathLike, num_points: int = DEFAULT_NUM_POINTS, up: str = "y") -> np.ndarray:
    """One shape file -> float32 ``(N, 3)`` or ``(N, 6)`` cloud (see the module docstring)."""
    path = Path(path)
    if up not in UP_AXES:
        to_y_up(np.zeros((1, 3)), up)  # raises the one clear error
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ShapeReadError(f"{path}: unsupported shape format {suffix or '(no extension)'!r}. Fix: pass one of "
                             f"{', '.join(SUPPORTED_SUFFIXES)}.")
    if not path.is_file():
        raise ShapeReadError(f"{path}: shape file not found. Fix: check the path.")
    if path.stat().st_size == 0:
        raise ShapeReadError(f"{path}: the file is empty. Fix: re-export the shape.")
    if suffix == ".npy":
        try:
            raw = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise ShapeReadError(f"{path}: cannot be read as a NumPy array ({type(exc).__name__}: {exc}). Fix: "
                                 "save it with numpy.save(path, points).") from None
        return prepare_points(raw, up, str(path))
    if suffix in (".xyz", ".txt"):
        return prepare_points(_read_text_cloud(path), up, str(path))
    return _read_mesh(path, num_points, up)


def _read_text_cloud(path: Path) -> np.ndarray:
    try:
        text = path.read_text(encoding="utf-8").replace(",", " ")
    except UnicodeDecodeError:
        raise ShapeReadError(f"{path}: not a text point file. Fix: one point per line, x y z [r g b].") from None
    rows = [ln.split() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not rows:
        raise ShapeReadError(f"{path}: holds no points. Fix: one point per line, x y z [r g b].")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        bad = next(i for i, r in enumerate(rows) if len(r) != len(rows[0]))
        raise ShapeReadError(f"{path}: point {bad + 1} has {len(rows[bad])} columns but the first has {len(rows[0])} "
                             "(truncated or corrupt file). Fix: re-export the cloud.")
    try:
        return np.asarray(rows, dtype=np.float64)
    except ValueError as exc:
        raise ShapeReadError(f"{path}: holds a value that is not a number ({exc}). Fix: re-export the cloud.") from None


def _read_mesh(path: Path, num_points: int, up: str) -> np.ndarray:
    import logging

    try:
        import trimesh
    except ImportError:
        raise ShapeReadError(f"{path}: reading meshes needs the trimesh package. Fix: pip install trimesh") from None
    from .data.shapes import triangles

    logging.getLogger("trimesh").setLevel(logging.ERROR)
    try:
        loaded = trimesh.load(str(path), force=None, process=False)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ShapeReadError(f"{path}: cannot be read as a {path.suffix.lstrip('.').upper()} mesh ({first[:200]}). "
                             "Fix: re-export it, or check that the file is not truncated.") from None
    if isinstance(loaded, trimesh.Scene):
        geoms = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh)] if loaded.geometry else []
        loaded = trimesh.util.concatenate(geoms) if geoms else None
    if isinstance(loaded, trimesh.PointCloud) and path.suffix.lower() == ".ply":   # a scan: vertices only
        colors = getattr(loaded, "colors", None)
        pts = np.asarray(loaded.vertices, float)
        if colors is not None and len(colors) == len(pts) and np.ptp(np.asarray(colors)[:, :3]) > 0:
            pts = np.concatenate([pts, np.asarray(colors, float)[:, :3] / 255.0], axis=1)
        return prepare_points(pts, up, str(path))
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0 or len(loaded.vertices) == 0:
        raise ShapeReadError(f"{path}: the mesh has no triangles. Fix: export the surface (faces), not only "
                             "vertices or lines.")
    vertices = np.asarray(loaded.vertices, float)
    faces = np.asarray(loaded.faces, dtype=np.int64)
    if not np.isfinite(vertices).all():
        bad = int((~np.isfinite(vertices)).any(axis=1).sum())
        raise ShapeReadError(f"{path}: {bad} vertex(es) have NaN or infinite coordinates. Fix: repair or "
                             "re-export the mesh.")
    colors = _vertex_colors(loaded)
    try:
        sampler, _ = triangles(vertices, faces, colors)
    except ValueError as exc:
        raise ShapeReadError(f"{path}: {exc}. Fix: pass a mesh with a real surface.") from None
    seed = int(file_digest(path)[:16], 16)
    pts = sampler(int(num_points), np.random.default_rng(seed))
    return prepare_points(pts, up, str(path))


def _vertex_colors(mesh) -> np.ndarray | None:
    """Per-vertex rgb in 0..1 when the file stores real vertex colours (not trimesh's default grey)."""
    visual = getattr(mesh, "visual", None)
    if visual is None or getattr(visual, "kind", None) != "vertex":
        return None
    col = np.asarray(visual.vertex_colors, float)[:, :3] / 255.0
    return col if len(col) == len(mesh.vertices) and np.ptp(col) > 0 else None


def read_shapes(paths: Sequence[str | os.PathLike], num_points: int = DEFAULT_NUM_POINTS, up: str = "y",
                progress: bool = True) -> list[np.ndarray]:
    """:func:`read_shape` over many files with a progress bar."""
    from tqdm.auto import tqdm

    return [read_shape(p, num_points, up) for p in tqdm(list(paths), desc="reading shapes", unit="shape",
                                                        disable=None if progress else True, leave=False)]
