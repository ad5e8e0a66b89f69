"""Drawing helpers for hyperbolic geometry in the Poincaré disk (matplotlib).

All inputs are hyperboloid points ``(..., 3)`` (time first, 2 space dimensions) with curvature ``c``;
the disk drawn has radius ``1/sqrt(c)``. Functions draw onto a given ``Axes`` and return it, so
notebooks stay short and every chapter draws the same way.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from h2arn import lorentz as L

__all__ = ["disk_axes", "draw_points", "draw_geodesic", "cone_mask", "draw_cone", "geodesic_points"]


def disk_axes(ax, c: float = 1.0, title: str | None = None, grid_circles: bool = True):
    """Prepare ``ax`` as the Poincaré disk of radius 1/sqrt(c): boundary circle, equal aspect, no ticks.

    With ``grid_circles`` the hyperbolic circles of radius 1, 2, 3, ... around the origin are drawn,
    which shows how the disk compresses distance towards its boundary.
    """
    radius = 1.0 / math.sqrt(c)
    theta = np.linspace(0, 2 * np.pi, 361)
    ax.plot(radius * np.cos(theta), radius * np.sin(theta), color="black", lw=1.2)
    if grid_circles:
        for r_h in range(1, 8):
            # a hyperbolic circle of radius r_h about the origin has Euclidean radius tanh(sqrt(c) r_h / 2)/sqrt(c)
            r_e = math.tanh(math.sqrt(c) * r_h / 2) / math.sqrt(c)
            ax.plot(r_e * np.cos(theta), r_e * np.sin(theta), color="0.85", lw=0.6, zorder=0)
    ax.set_aspect("equal")
    ax.set_xlim(-1.05 * radius, 1.05 * radius)
    ax.set_ylim(-1.05 * radius, 1.05 * radius)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def draw_points(ax, x: torch.Tensor, c: float, labels=None, **scatter_kw):
    """Scatter hyperboloid points ``(N, 3)`` in the disk, optionally labelled."""
    p = _np(L.to_poincare(x, c))
    ax.scatter(p[:, 0], p[:, 1], **{"s": 25, "zorder": 3, **scatter_kw})
    for (px, py), label in zip(p, labels or []):
        ax.annotate(str(label), (px, py), textcoords="offset points", xytext=(4, 4), fontsize=8)
    return ax


def geodesic_points(x: torch.Tensor, y: torch.Tensor, c: float, n: int = 100) -> torch.Tensor:
    """``n`` points along the geodesic from x to y ``(3,)``: ``exp_x(t log_x(y))`` for t in [0, 1]."""
    u = L.logmap(x, y, c)
    t = torch.linspace(0, 1, n, dtype=x.dtype).unsqueeze(-1)
    return L.expmap(x.expand(n, -1), t * u, c)


def draw_geodesic(ax, x: torch.Tensor, y: torch.Tensor, c: float, n: int = 100, **plot_kw):
    """Draw the geodesic segment between two hyperboloid points (a circular arc in the disk)."""
    p = _np(L.to_poincare(geodesic_points(x.double(), y.double(), c, n), c))
    ax.plot(p[:, 0], p[:, 1], **{"lw": 1.5, **plot_kw})
    return ax


def cone_mask(apex: torch.Tensor, c: float, K: float = 0.1, resolution: int = 300):
    """Boolean grid over the disk: which points lie inside the entailment cone of ``apex`` ``(3,)``.

    Returns ``(xs, ys, inside)`` for ``ax.contourf``. A point y is inside when
    ``exterior_angle(apex, y) <= half_aperture(apex)`` (MERU / Ganea et al.).
    """
    radius = 1.0 / math.sqrt(c)
    lin = torch.linspace(-radius, radius, resolution, dtype=torch.float64)
    gx, gy = torch.meshgrid(lin, lin, indexing="xy")
    grid = torch.stack([gx, gy], dim=-1)
    in_disk = grid.norm(dim=-1) < radius * 0.999
    pts = L.from_poincare(grid.clamp(-radius, radius) * in_disk.unsqueeze(-1), c)
    a = apex.double().expand_as(pts)
    inside = (L.exterior_angle(a, pts, c) <= L.half_aperture(a, c, K)) & in_disk
    return gx.numpy(), gy.numpy(), inside.numpy()


def draw_cone(ax, apex: torch.Tensor, c: float, K: float = 0.1, resolution: int = 300, color="tab:blue",
              alpha: float = 0.25, label: str | None = None):
    """Shade the entailment cone of ``apex`` in the disk and mark the apex."""
    xs, ys, inside = cone_mask(apex, c, K, resolution)
    ax.contourf(xs, ys, inside.astype(float), levels=[0.5, 1.5], colors=[color], alpha=alpha)
    draw_points(ax, apex.reshape(1, -1).double(), c, labels=[label] if label else None, color=color,
                marker="^", s=45)
    return ax
