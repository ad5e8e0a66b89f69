r"""Interactive retrieval (chapter 08): drawing functions and thin ipywidgets wiring over :mod:`h2arn.search`.

Everything a widget does is a plain function of a :class:`h2arn.search.RetrievalSession` (the trained
model, the gallery of test clouds and their embeddings, the test captions and the text encoder that made
the features), so tests and headless runs call the functions directly. The search and explanation
functions live in :mod:`h2arn.search` and are re-exported here for the chapter:

* :func:`search` ``(session, query, k) -> list[SearchResult]``: encode the query with the SAME text
  encoder as the features (MiniLM by default) and the model's ``encode_text`` (with the tokenizer's
  mask), rank the clouds by Lorentz distance;
* :func:`draw_results`: the top-k clouds (matplotlib 3-D) with their distances;
* :func:`disk_layout` / :func:`draw_disk` ``(session, c, K, ...)``: texts and clouds in a Poincaré disk;
* :func:`token_assignment` / :func:`draw_contributions`: which tokens carried a cloud's embedding,
  coloured on the cloud; :func:`draw_text_contributions`: the same for the query's word pieces.

:class:`RetrievalApp` wires them to ipywidgets (text box, k, curvature and aperture sliders, a shape
selector). Its callbacks are ordinary methods, so papermill runs exercise them by setting widget values
in code; nothing blocks and nothing waits for input.

What the Poincaré-disk picture is (and is not)
----------------------------------------------
Embeddings live in ``D+1 = d_model+1`` dimensions. The picture maps each embedding ``x`` to the tangent
space at the origin (``v = logmap0(x)`` at the model's curvature, an exact step: ``|v|`` is the true
distance to the origin), takes the DIRECTION of ``v`` from a 2-D PCA of all shown tangent vectors (fit
about the origin, not centred, so the origin stays the origin) and keeps the exact LENGTH ``|v|``, then
maps the 2-D vector back with ``expmap0`` at the view curvature and into the Poincaré disk. So:

* distance to the origin (the hierarchy depth) is exact; at the model's own curvature the cone
  half-aperture of every apex is exact too (it depends only on that distance);
* directions, and therefore distances between points and exterior angles, are a 2-D projection: the
  caption reports how much of the tangent vectors' squared length the two PCA axes capture, and the
  fraction of (caption, matching cloud) pairs inside the caption's cone computed in the FULL space
  next to the fraction the picture shows;
* the curvature slider does not retrain anything: it re-maps the same tangent layout with another
  curvature (how strongly the disk compresses distant points). Only ``c = c_model`` is the model's space.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from h2arn import lorentz as L
from h2arn.search import (RetrievalSession, SearchResult, contribution_map, effective_number, encode_query,
                          redundancy_share, search, session_from_run, text_contributions, token_assignment)

__all__ = ["SearchResult", "RetrievalSession", "load_session", "search", "draw_results", "DiskLayout",
           "disk_layout", "cone_fractions", "draw_disk", "token_assignment", "contribution_map",
           "draw_contributions", "redundancy_share", "text_contributions", "draw_text_contributions", "RetrievalApp"]


def load_session(profile: str = "ci", device: str = "auto", variant: str = "h2arn", seed: int = 0,
                 split: str = "test") -> RetrievalSession:
    """Train (or reuse the cached) run of ``profile`` and gather its ``split`` gallery into a session
    (:func:`h2arn.search.session_from_run` does the gathering)."""
    from h2arn.course.experiments import ensure_trained
    from h2arn.device import resolve_device

    dev = resolve_device(device)
    run_dir = ensure_trained(profile, variant, str(dev), seed=seed)
    return session_from_run(run_dir, split, str(dev))


def draw_results(session: RetrievalSession, results: Sequence[SearchResult], query: str | None = None,
                 target: str | None = None):
    """One 3-D panel per retrieved cloud, titled with rank, name and distance; ``target`` is outlined."""
    import matplotlib.pyplot as plt

    from h2arn.data.viz import plot_cloud

    n = max(1, len(results))
    fig = plt.figure(figsize=(2.6 * n, 3.0))
    for i, r in enumerate(results):
        ax = fig.add_subplot(1, n, i + 1, projection="3d")
        mark = "  (target)" if target is not None and r.name == target else ""
        cat = f"\n{r.category}" if r.category else ""
        plot_cloud(ax, session.cloud_points[r.index], title=f"#{r.rank} {r.name}{cat}\nd = {r.distance:.3f}{mark}",
                   max_points=1500)
    if query:
        fig.suptitle(f"query: {query!r}", fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 0.88))
    else:
        fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- Poincaré disk

@dataclass
class DiskLayout:
    """2-D tangent vectors (exact length, PCA direction) of the shown texts and clouds.

    text_v ``(N_t, 2)``, cloud_v ``(N_p, 2)``, float64; text_index / cloud_index: which session rows;
    basis ``(E-1, 2)``: the PCA axes; captured: fraction of the squared tangent length on those axes.
    """

    text_v: Tensor
    cloud_v: Tensor
    text_index: list[int]
    cloud_index: list[int]
    basis: Tensor
    captured: float

    def project(self, emb: Tensor, c_model: float) -> Tensor:
        """Place extra embeddings (e.g. a query) ``(N, E)`` with the same axes: ``(N, 2)``."""
        return _planar(L.logmap0(emb.double(), c_model), self.basis)


def _planar(v: Tensor, basis: Tensor) -> Tensor:
    """Direction from the projection on ``basis``, length from ``v`` itself (exact distance to origin)."""
    p = v @ basis
    norm_p = p.norm(dim=-1, keepdim=True)
    return torch.where(norm_p > 1e-12, p / norm_p.clamp_min(1e-12) * v.norm(dim=-1, keepdim=True), torch.zeros_like(p))


def _subsample(n: int, m: int) -> list[int]:
    return list(range(n)) if n <= m else np.linspace(0, n - 1, m).round().astype(int).tolist()


def disk_layout(session: RetrievalSession, max_texts: int = 80, max_clouds: int = 60) -> DiskLayout:
    """The (cached) 2-D layout of a deterministic subset of captions and clouds."""
    key = ("layout", max_texts, max_clouds)
    if key in session._cache:
        return session._cache[key]
    c = session.curvature
    cloud_index = _subsample(session.cloud_emb.shape[0], max_clouds)
    # captions of the shown clouds first, so cones can be checked against their own clouds
    shown = set(cloud_index)
    own = [t for t, p in enumerate(session.txt_to_pc.tolist()) if p in shown]
    text_index = [own[i] for i in _subsample(len(own), max_texts)]
    tv = L.logmap0(session.text_emb[text_index].double(), c)
    pv = L.logmap0(session.cloud_emb[cloud_index].double(), c)
    allv = torch.cat([tv, pv])
    _, s, vh = torch.linalg.svd(allv, full_matrices=False)
    basis = vh[:2].T.contiguous()
    captured = float((s[:2] ** 2).sum() / (s ** 2).sum().clamp_min(1e-300))
    layout = DiskLayout(_planar(tv, basis), _planar(pv, basis), text_index, cloud_index, basis, captured)
    session._cache[key] = layout
    return layout


def cone_fractions(session: RetrievalSession, layout: DiskLayout, c: float, K: float) -> dict[str, float]:
    """Share of shown (caption, own cloud) pairs with the cloud inside the caption's cone.

    ``full_space``: in the model's space (all dimensions, the model's curvature, aperture K), the number
    the picture approximates; ``picture``: in the 2-D view at curvature ``c``.
    """
    c_model = session.curvature
    pos = {p: i for i, p in enumerate(layout.cloud_index)}
    pairs = [(ti, pos[int(session.txt_to_pc[t])]) for ti, t in enumerate(layout.text_index)
             if int(session.txt_to_pc[t]) in pos]
    if not pairs:
        return {"full_space": float("nan"), "picture": float("nan"), "pairs": 0}
    ti = torch.tensor([a for a, _ in pairs])
    pi = torch.tensor([b for _, b in pairs])
    t_full = session.text_emb[[layout.text_index[i] for i in ti.tolist()]].double()
    p_full = session.cloud_emb[[layout.cloud_index[i] for i in pi.tolist()]].double()
    inside_full = L.exterior_angle(t_full, p_full, c_model) <= L.half_aperture(t_full, c_model, K)
    t2 = L.expmap0(layout.text_v[ti], c)
    p2 = L.expmap0(layout.cloud_v[pi], c)
    inside_pic = L.exterior_angle(t2, p2, c) <= L.half_aperture(t2, c, K)
    return {"full_space": float(inside_full.double().mean()), "picture": float(inside_pic.double().mean()),
            "pairs": len(pairs)}


def draw_disk(session: RetrievalSession, c: float | None = None, K: float = 0.1, *, query: str | None = None,
              highlight: Sequence[int] = (), n_cones: int = 3, max_texts: int = 80, max_clouds: int = 60,
              cone_resolution: int = 160):
    """Captions (dots, coloured by specificity level) and clouds (squares) in the Poincaré disk at curvature c.

    ``query``: its embedding is placed with the same axes (a star) and its entailment cone (aperture K) is
    drawn; otherwise the cones of the first ``n_cones`` shown captions are drawn. ``highlight``: gallery
    indices (e.g. the top-k results) drawn larger. Returns the figure; its title reports the PCA share and
    the cone fractions (full space vs picture), see the module docstring.
    """
    import matplotlib.pyplot as plt

    from h2arn.course.plots import disk_axes, draw_cone

    c_model = session.curvature
    c = float(c_model if c is None else c)
    if not c > 0:
        raise ValueError(f"curvature must be > 0, got {c}")
    layout = disk_layout(session, max_texts, max_clouds)
    fig, ax = plt.subplots(figsize=(6.2, 6.2))
    disk_axes(ax, c)
    tx = L.to_poincare(L.expmap0(layout.text_v, c), c).numpy()
    px = L.to_poincare(L.expmap0(layout.cloud_v, c), c).numpy()
    apexes: list[tuple[Tensor, str]] = []
    if query is not None:
        cached = session._cache.get("last_query")
        emb = cached[1] if cached and cached[0] == query else encode_query(session, query)[0]
        qv = layout.project(emb[None], c_model)
        apexes.append((L.expmap0(qv, c)[0], "query"))
    else:
        apexes += [(L.expmap0(layout.text_v[i:i + 1], c)[0], f"caption {layout.text_index[i]}")
                   for i in range(min(n_cones, len(layout.text_index)))]
    colors = ["tab:orange", "tab:green", "tab:purple", "tab:brown"]
    for j, (apex, label) in enumerate(apexes):
        draw_cone(ax, apex, c, K, resolution=cone_resolution, color=colors[j % len(colors)], alpha=0.18, label=label)
    levels = session.caption_levels
    if levels is not None and all(levels[t] is not None for t in layout.text_index):
        lv = np.array([levels[t] for t in layout.text_index], dtype=float)
        sc = ax.scatter(tx[:, 0], tx[:, 1], c=lv, cmap="viridis", s=14, zorder=3, label="captions")
        fig.colorbar(sc, ax=ax, fraction=0.035, pad=0.02, label="caption level (0 = most generic)")
    else:
        ax.scatter(tx[:, 0], tx[:, 1], color="tab:blue", s=14, zorder=3, label="captions")
    ax.scatter(px[:, 0], px[:, 1], color="black", marker="s", s=12, zorder=3, label="clouds")
    hi = [layout.cloud_index.index(i) for i in highlight if i in layout.cloud_index]
    if hi:
        ax.scatter(px[hi, 0], px[hi, 1], facecolor="none", edgecolor="red", marker="s", s=90, lw=1.5, zorder=4,
                   label="top-k results")
    if query is not None:
        q = L.to_poincare(apexes[0][0][None], c).numpy()
        ax.scatter(q[:, 0], q[:, 1], marker="*", color="red", s=160, zorder=5, label="query")
    frac = cone_fractions(session, layout, c, K)
    ax.legend(loc="lower left", fontsize=7, framealpha=0.8)
    note = "" if math.isclose(c, c_model, rel_tol=1e-6) else " (re-mapped: not the model's curvature)"
    ax.set_title(f"Poincaré disk, c = {c:.3g}{note}, K = {K:.3g}\n"
                 f"model c = {c_model:.3g}; 2-D axes keep {100 * layout.captured:.0f}% of squared tangent length\n"
                 f"cloud inside its caption's cone: {100 * frac['full_space']:.0f}% in the full space, "
                 f"{100 * frac['picture']:.0f}% in this picture ({frac['pairs']} pairs)", fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- token contributions

def draw_contributions(session: RetrievalSession, index: int):
    """Left: the cloud coloured by contribution (per point); right: token weights sorted, vs uniform."""
    import matplotlib.pyplot as plt

    from h2arn.data.viz import plot_cloud

    points, per_point, w = contribution_map(session, index)
    valid = session.cloud_mask[index].numpy().astype(bool)
    wv = np.sort(w[valid])[::-1]
    fig = plt.figure(figsize=(9, 3.6))
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    plot_cloud(ax, points, colors=np.log10(np.maximum(per_point, 1e-12)), size=3, max_points=4000,
               title=f"{session.cloud_names[index]}: contribution per point")
    fig.colorbar(ax.collections[-1], ax=ax, fraction=0.04, pad=0.0, label="log10 weight per point")
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.bar(np.arange(len(wv)), wv, color="tab:blue")
    ax2.axhline(1.0 / max(len(wv), 1), color="red", ls="--", lw=1, label="uniform (mean pooling)")
    top = min(10, len(wv))
    ax2.set_title(f"token weights, sorted: top {top} carry {100 * wv[:top].sum():.0f}%; "
                  f"effective tokens {effective_number(wv):.1f} of {len(wv)}", fontsize=8)
    ax2.set_xlabel("token (sorted)")
    ax2.set_ylabel("weight")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig


def draw_text_contributions(session: RetrievalSession, query: str):
    """Bar chart: which word pieces carried the query's embedding."""
    import matplotlib.pyplot as plt

    names, w = text_contributions(session, query)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(names)), 2.8))
    ax.bar(np.arange(len(w)), w, color="tab:orange")
    ax.axhline(1.0 / max(len(w), 1), color="red", ls="--", lw=1, label="uniform")
    ax.set_xticks(np.arange(len(w)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("weight")
    ax.set_title(f"query tokens' contributions (effective {effective_number(w):.1f} of {len(w)})", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- widget wiring

class RetrievalApp:
    """ipywidgets front end. ``app.widget`` is the box to display; every callback is a plain method.

    Headless use (papermill, tests): set ``app.query.value = "..."`` (or call :meth:`run_query`), move the
    sliders by assigning ``.value``, pick a shape with ``app.shape.value = index``; the figures of the last
    update are kept in ``app.figures`` (``"results"``, ``"disk"``, ``"contributions"``, ``"text"``).
    """

    def __init__(self, session: RetrievalSession, query: str = "", k: int = 5, K: float = 0.1,
                 render: bool = True):
        import ipywidgets as w

        self.session = session
        self.render = render
        self.results: list[SearchResult] = []
        self.figures: dict[str, Any] = {}
        self._contrib_index: int | None = None
        c0 = session.curvature
        self.query = w.Text(value="", placeholder="describe a shape, press Enter", description="query",
                            continuous_update=False, layout=w.Layout(width="60%"))
        self.k = w.IntSlider(value=k, min=1, max=min(10, session.cloud_emb.shape[0]), description="top-k")
        self.curvature = w.FloatLogSlider(value=c0, base=10, min=math.log10(c0) - 1, max=math.log10(c0) + 1,
                                          step=0.05, description="curvature c", readout_format=".3g")
        self.aperture = w.FloatSlider(value=K, min=0.01, max=1.0, step=0.01, description="cone K",
                                      readout_format=".2f")
        self.shape = w.Dropdown(options=[], description="shape")
        self.out_results, self.out_disk, self.out_contrib = w.Output(), w.Output(), w.Output()
        self.status = w.HTML()
        self.query.observe(self._on_query, names="value")
        self.k.observe(self._on_query, names="value")
        self.curvature.observe(self._on_disk, names="value")
        self.aperture.observe(self._on_disk, names="value")
        self.shape.observe(self._on_shape, names="value")
        self.widget = w.VBox([w.HBox([self.query, self.k]), self.status, self.out_results,
                              w.HBox([w.VBox([self.curvature, self.aperture, self.out_disk]),
                                      w.VBox([self.shape, self.out_contrib])])])
        if query:
            self.query.value = query      # triggers the first search

    # ---- callbacks (traitlets call them with a change dict; code can call them with nothing)
    def _on_query(self, change: dict | None = None) -> None:
        if self.query.value.strip():
            self.run_query(self.query.value)

    def _on_disk(self, change: dict | None = None) -> None:
        self.redraw_disk()

    def _on_shape(self, change: dict | None = None) -> None:
        if self.shape.value is not None:
            self.show_contributions(int(self.shape.value))

    # ---- actions
    def run_query(self, query: str) -> list[SearchResult]:
        """Search, draw the results, the disk, and the top result's contributions."""
        try:
            self.results = search(self.session, query, self.k.value)
        except ValueError as exc:
            self.status.value = f"<b>{exc}</b>"
            return []
        self.status.value = ""
        self._show("results", self.out_results, draw_results(self.session, self.results, query))
        self._show("text", self.out_results, draw_text_contributions(self.session, query), clear=False)
        options = [(f"#{r.rank} {r.name} (d={r.distance:.2f})", r.index) for r in self.results]
        self._contrib_index = None
        self.shape.options = options                  # may select the first option (-> _on_shape)
        if self.shape.value != options[0][1]:
            self.shape.value = options[0][1]          # -> _on_shape -> show_contributions
        if self._contrib_index != self.shape.value:
            self.show_contributions(int(self.shape.value))
        self.redraw_disk()
        return self.results

    def redraw_disk(self) -> None:
        q = self.query.value if self.query.value.strip() else None
        fig = draw_disk(self.session, self.curvature.value, self.aperture.value, query=q,
                        highlight=[r.index for r in self.results])
        self._show("disk", self.out_disk, fig)

    def show_contributions(self, index: int) -> None:
        self._contrib_index = index
        self._show("contributions", self.out_contrib, draw_contributions(self.session, index))

    def _show(self, key: str, out, fig, clear: bool = True) -> None:
        import matplotlib.pyplot as plt

        self.figures[key] = fig
        if self.render:
            from IPython.display import clear_output, display

            with out:
                if clear:
                    clear_output(wait=True)
                display(fig)
        plt.close(fig)
