"""Data-tour plots: they draw what they are given (checked on the artists, headless backend)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from h2arn.data import ShapeRecord, draw_examples, plot_cloud  # noqa: E402


def _record(i: int, n: int = 50) -> ShapeRecord:
    rng = np.random.default_rng(i)
    pts = np.concatenate([rng.uniform(-1, 1, (n, 3)), rng.uniform(0, 1, (n, 3))], 1).astype(np.float32)
    return ShapeRecord(f"shape_{i}", "Elephant", pts, [f"a vase number {i}.", "a tall blue vase"], None, {})


def test_plot_cloud_uses_rgb_columns_and_swaps_y_up():
    fig = plt.figure()
    ax = fig.add_subplot(projection="3d")
    rec = _record(0)
    plot_cloud(ax, rec.points, title="t")
    coll = ax.collections[0]
    xs, ys, zs = coll._offsets3d
    assert len(zs) == len(rec.points)
    face = coll.get_facecolors()[:, :3]  # matplotlib may depth-sort/cull, so compare as a set
    dist = np.abs(face[:, None, :] - rec.points[None, :, 3:6]).max(-1).min(1)
    assert len(face) > 0 and dist.max() < 1e-6
    np.testing.assert_allclose(np.asarray(zs), rec.points[:, 1])  # cloud y is drawn as matplotlib's vertical z
    plt.close(fig)


def test_plot_cloud_scalar_colors_and_thinning():
    fig = plt.figure()
    ax = fig.add_subplot(projection="3d")
    pts = np.random.default_rng(0).normal(size=(5000, 3))
    plot_cloud(ax, pts, colors=np.arange(5000.0), max_points=1000)
    assert len(ax.collections[0].get_offsets()) == 1000
    plt.close(fig)


def test_draw_examples_grid_and_titles():
    fig = draw_examples([_record(i) for i in range(5)], n=4, cols=3)
    axes3d = [a for a in fig.axes if a.name == "3d"]
    assert len(axes3d) == 4
    assert "shape_0" in axes3d[0].get_title() and "tall blue vase" in axes3d[0].get_title()
    plt.close(fig)
