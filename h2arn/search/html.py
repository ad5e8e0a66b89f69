r"""The result page of ``python -m h2arn.search query --html``: one self-contained HTML file of thumbnails.

Why a module of its own: rendering (matplotlib thumbnails, markup) is presentation, kept out of the search
API so that ``from h2arn.search import Retriever`` never needs a plotting backend.
"""
from __future__ import annotations

import base64
import io
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .explain import effective_number

if TYPE_CHECKING:
    from .retriever import QueryResult, Retriever


def _thumbnail_png(points: np.ndarray, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from h2arn.data.viz import plot_cloud

    fig = plt.figure(figsize=(2.4, 2.4))
    ax = fig.add_subplot(1, 1, 1, projection="3d")
    plot_cloud(ax, points, title=None, size=2.0, max_points=2048)
    ax.set_title(title, fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def write_html(results: Sequence[QueryResult], retriever: Retriever, path: str | os.PathLike) -> Path:
    """One self-contained page: per query, its token weights and a rendered thumbnail + distance per hit."""
    from html import escape

    parts = ["<!doctype html><meta charset='utf-8'><title>h2arn search</title>",
             "<style>body{font-family:sans-serif} .hit{display:inline-block;margin:4px;text-align:center;"
             "font-size:12px;vertical-align:top} .tok{display:inline-block;margin:1px;padding:1px 3px;"
             "background:#fde3c8;border-radius:3px;font-size:12px}</style>",
             f"<p>model <code>{escape(str(retriever.model_file))}</code>, {len(retriever.gallery)} shapes; "
             "distances: " + ("Lorentz geodesic" if retriever.model.hyperbolic else "cosine") + "</p>"]
    for res in results:
        parts.append(f"<h2>{escape(res.query)}</h2><p>query token weights: ")
        top = float(res.query_token_weights.max()) if len(res.query_token_weights) else 1.0
        for t, w in zip(res.query_tokens, res.query_token_weights):
            alpha = 0.15 + 0.85 * float(w) / top
            parts.append(f"<span class='tok' style='opacity:{alpha:.2f}' title='{w:.3f}'>{escape(t)} {w:.2f}</span>")
        parts.append("</p><div>")
        for h in res.hits:
            png = _thumbnail_png(retriever.gallery.points[h.index], f"#{h.rank} {h.id}")
            parts.append(f"<div class='hit'><img src='data:image/png;base64,{png}' width='190'><br>"
                         f"#{h.rank} <b>{escape(h.id)}</b><br>d = {h.distance:.4f}<br>"
                         f"effective tokens {effective_number(h.token_weights):.1f} of {len(h.token_weights)}<br>"
                         "top token weights " + " ".join(f"{w:.2f}" for w in np.sort(h.token_weights)[::-1][:5])
                         + "</div>")
        parts.append("</div>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("\n".join(parts))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path
