"""h2arn.meshes: every supported format read from tiny files built here, the benchmark's conventions, clear errors."""
from __future__ import annotations

import numpy as np
import pytest

trimesh = pytest.importorskip("trimesh")

from h2arn.data import normalize_unit_sphere  # noqa: E402
from h2arn.data.shapes import triangles  # noqa: E402
from h2arn.meshes import (MESH_SUFFIXES, ShapeReadError, find_shapes, prepare_points, read_shape,  # noqa: E402
                          to_y_up)


def _box():
    return trimesh.creation.box(extents=(1.0, 2.0, 0.5))


@pytest.mark.parametrize("suffix", MESH_SUFFIXES)
def test_every_mesh_format_is_sampled_and_normalised(tmp_path, suffix):
    path = tmp_path / f"box{suffix}"
    _box().export(path)
    pts = read_shape(path, num_points=300)
    assert pts.shape == (300, 3) and pts.dtype == np.float32           # no colours in the file -> xyz only
    assert np.linalg.norm(pts, axis=1).max() == pytest.approx(1.0, abs=1e-5)
    centre = (pts.max(0) + pts.min(0)) / 2
    assert np.abs(centre).max() < 0.05                                 # bounding-box centred
    assert np.ptp(pts[:, 1]) > np.ptp(pts[:, 0]) > np.ptp(pts[:, 2])  # y (2.0) tallest, as in the file
    assert np.array_equal(pts, read_shape(path, num_points=300))       # seeded by content: deterministic


def test_point_cloud_files_and_optional_rgb(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(50, 3))
    np.save(tmp_path / "a.npy", xyz)
    np.savetxt(tmp_path / "b.xyz", xyz)
    np.savetxt(tmp_path / "c.txt", np.concatenate([xyz, rng.integers(0, 256, (50, 3))], 1), delimiter=",")
    expect, _, _ = normalize_unit_sphere(xyz)
    for name in ("a.npy", "b.xyz"):
        pts = read_shape(tmp_path / name)
        assert pts.shape == (50, 3)
        np.testing.assert_allclose(pts, expect, atol=1e-5)
    coloured = read_shape(tmp_path / "c.txt")
    assert coloured.shape == (50, 6) and 0 <= coloured[:, 3:].min() and coloured[:, 3:].max() <= 1  # 0..255 -> 0..1


def test_vertex_colours_are_interpolated(tmp_path):
    mesh = _box()
    mesh.visual.vertex_colors = np.tile([255, 0, 0, 255], (len(mesh.vertices), 1))
    mesh.export(tmp_path / "red.ply")
    pts = read_shape(tmp_path / "red.ply", num_points=100)
    assert pts.shape == (100, 6)
    np.testing.assert_allclose(pts[:, 3:], np.tile([1.0, 0.0, 0.0], (100, 1)), atol=1e-6)


def test_sampling_is_area_weighted_like_the_generator():
    # two squares of area 1 and 3: a quarter of the points on the first
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0],
                  [5, 0, 0], [8, 0, 0], [8, 1, 0], [5, 1, 0]], float)
    f = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    sampler, area = triangles(v, f)
    assert area == pytest.approx(4.0)
    pts = sampler(8000, np.random.default_rng(0))
    share = float((pts[:, 0] < 2).mean())
    assert share == pytest.approx(0.25, abs=0.02)
    inside = pts[pts[:, 0] < 2]
    assert abs(inside[:, 0].mean() - 0.5) < 0.02 and abs(inside[:, 1].mean() - 0.5) < 0.02  # uniform on the square


def test_z_up_is_rotated_to_y_up():
    rng = np.random.default_rng(1)
    y_up = rng.normal(size=(40, 3)) * [0.2, 1.0, 0.3]
    z_up = np.stack([y_up[:, 0], -y_up[:, 2], y_up[:, 1]], 1)   # the same object exported z-up
    np.testing.assert_allclose(to_y_up(z_up, "z"), y_up)
    np.testing.assert_allclose(prepare_points(z_up, "z"), prepare_points(y_up, "y"), atol=1e-6)
    with pytest.raises(ShapeReadError, match="up axis"):
        to_y_up(y_up, "x")


def test_find_shapes(tmp_path):
    (tmp_path / "sub").mkdir()
    _box().export(tmp_path / "sub" / "b.obj")
    np.save(tmp_path / "a.npy", np.ones((3, 3)))
    (tmp_path / "notes.md").write_text("not a shape")
    assert [p.name for p in find_shapes(tmp_path)] == ["a.npy", "b.obj"]
    with pytest.raises(ShapeReadError, match="no shape files"):
        find_shapes(tmp_path / "sub2" if (tmp_path / "sub2").mkdir() is None else None)
    with pytest.raises(ShapeReadError, match="no such file"):
        find_shapes(tmp_path / "missing")
    with pytest.raises(ShapeReadError, match="unsupported"):
        find_shapes(tmp_path / "notes.md")


@pytest.mark.parametrize("case", ["empty", "garbage", "nan_vertices", "no_faces", "flat_cloud", "ragged"])
def test_bad_shapes_give_one_clear_error_naming_the_file(tmp_path, case):
    if case == "empty":
        path = tmp_path / "e.obj"
        path.write_text("")
    elif case == "garbage":
        path = tmp_path / "g.stl"
        path.write_bytes(b"\x00\x01 this is not an stl" * 3)
    elif case == "nan_vertices":
        path = tmp_path / "n.obj"
        path.write_text("v 0 0 0\nv 1 0 0\nv nan 1 0\nf 1 2 3\n")
    elif case == "no_faces":
        path = tmp_path / "l.obj"
        path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nl 1 2\n")
    elif case == "flat_cloud":
        path = tmp_path / "f.npy"
        np.save(path, np.zeros((10, 3)))
    else:
        path = tmp_path / "r.xyz"
        path.write_text("0 0 0\n1 1\n")
    with pytest.raises(ShapeReadError) as info:
        read_shape(path, num_points=64)
    msg = str(info.value)
    assert str(path) in msg and "Fix" in msg and "\n" not in msg


def test_ply_without_faces_is_a_point_cloud(tmp_path):
    pts = np.random.default_rng(2).normal(size=(70, 3))
    trimesh.PointCloud(pts).export(tmp_path / "scan.ply")
    got = read_shape(tmp_path / "scan.ply")
    assert got.shape == (70, 3)
    np.testing.assert_allclose(got, normalize_unit_sphere(pts)[0], atol=1e-5)
