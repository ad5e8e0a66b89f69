"""Small matplotlib helpers for data tours: one coloured cloud per 3-D axis (y up drawn as up)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def plot_cloud(ax, points: np.ndarray, colors: Optional[np.ndarray] = None, title: Optional[str] = None,
               size: float = 2.0, max_points: int = 4096):
    """Scatter a cloud on a 3-D axis.

    points ``(N, >=3)`` (xyz, y up; columns 3:6 are used as rgb when ``colors`` is None and present);
    colors ``(N, 3)`` rgb in 0..1 or ``(N,)`` scalars (drawn with a colormap). Matplotlib's vertical
    axis is z, so the cloud's y is drawn as z to keep objects upright.
    """
    pts = np.asarray(points)
    if len(pts) > max_points:  # deterministic thinning keeps plots fast
        pts = pts[np.linspace(0, len(pts) - 1, max_points).astype(int)]
        if colors is not None:
            colors = np.asarray(colors)[np.linspace(0, len(colors) - 1, max_points).astype(int)]
    if colors is None and pts.shape[1] >= 6:
        colors = np.clip(pts[:, 3:6], 0, 1)
    kwargs = {"s": size, "linewidths": 0}
    if colors is not None and np.ndim(colors) == 1:
        kwargs.update(c=colors, cmap="viridis")
    elif colors is not None:
        kwargs.update(c=np.clip(colors, 0, 1))
    ax.scatter(pts[:, 0], pts[:, 2], pts[:, 1], **kwargs)
    lim = float(np.abs(pts[:, :3]).max()) or 1.0
    ax.set_xlim(-lim, lim); ax.set_ylim(-lim, lim); ax.set_zlim(-lim, lim)
    ax.set_box_aspect((1, 1, 1))
    ax.view_init(elev=20, azim=-60)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    return ax


def _wrap(text: str, width: int = 38) -> str:
    import textwrap
    return "\n".join(textwrap.wrap(text, width)[:4])


def draw_examples(records: Sequence, n: int = 6, caption_index: int = -1, cols: int = 3):
    """A grid of the first ``n`` records (``ShapeRecord``), titled with one caption each; returns the figure."""
    import matplotlib.pyplot as plt

    recs = list(records)[:n]
    rows = max(1, -(-len(recs) // cols))
    fig = plt.figure(figsize=(3.2 * cols, 3.2 * rows))
    for i, rec in enumerate(recs):
        ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
        cap = rec.captions[caption_index] if rec.captions else ""
        plot_cloud(ax, rec.points, title=f"{rec.name}\n{_wrap(cap)}")
    fig.tight_layout()
    return fig
