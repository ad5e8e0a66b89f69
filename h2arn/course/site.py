"""The readable course site: every executed chapter as HTML and an index page, under ``build/site/``.

    python -m h2arn.course site --profile ci      # rebuild from build/notebooks/ci/ (``run`` calls this)

An executed notebook is the course a student reads without starting a kernel: outputs, figures and all.
The index lists each chapter with its status and run time (as papermill recorded them) and the first
figure it drew, so a broken chapter or a chapter without figures is visible at a glance. Pages are
self-contained (figures are embedded by nbconvert, formulas are MathML written here by ``site_math``, no
script comes from a CDN), and the index's thumbnails sit in ``figures/`` beside it, so the folder can be
copied or served as it is, offline too.
"""
from __future__ import annotations

import base64
import functools
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from h2arn.course.runner import NotebookResult, executed_summary

if TYPE_CHECKING:
    from h2arn.course.site_math import MathCount

__all__ = ["SiteChapter", "write_site", "chapter_title", "first_figure"]


@dataclass
class SiteChapter:
    notebook: str
    title: str
    status: str
    seconds: float
    page: str                  # file name of the chapter page, relative to the index
    figure: str | None         # thumbnail, relative to the index (None: the chapter drew no figure)
    errors: int                # code cells whose output is an error


def chapter_title(nb: dict, fallback: str) -> str:
    """The first markdown heading of the notebook (``# 03 · Saliency dilution``), else ``fallback``."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        for line in "".join(cell.get("source", "")).splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip()
    return fallback


def first_figure(nb: dict) -> bytes | None:
    """PNG bytes of the first image the executed notebook displays, or None."""
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            png = out.get("data", {}).get("image/png")
            if png:
                return base64.b64decode("".join(png) if isinstance(png, list) else png)
    return None


def _error_cells(nb: dict) -> int:
    return sum(any(o.get("output_type") == "error" for o in c.get("outputs", []))
               for c in nb.get("cells", []) if c.get("cell_type") == "code")


ERROR_CELL_TAG = "h2arn-error"   # on the page as class ``celltag_h2arn-error``: a cell whose output is an error


@functools.lru_cache(maxsize=1)
def _exporter():
    from h2arn.course.site_math import OfflineMathHTMLExporter

    return OfflineMathHTMLExporter()   # built once: the first export loads templates and CSS


def _export_html(nb_path: Path) -> tuple[str, MathCount]:
    """The lab-style HTML page of an executed notebook, figures embedded, formulas as MathML, error cells
    marked by a tag; and the count of its formulas (converted, and left as LaTeX)."""
    import nbformat

    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            cell.metadata.setdefault("tags", []).append(ERROR_CELL_TAG)
    body, resources = _exporter().from_notebook_node(nb)
    page = body.replace("</style>", ".celltag_h2arn-error { border-left: 4px solid #cf222e; }\n</style>", 1)
    return page, resources["math"]


_STATUS_COLOUR = {"ok": "#1a7f37", "failed": "#cf222e", "unfinished": "#9a6700", "invalid": "#cf222e"}


def _index_html(chapters: list[SiteChapter], profile: str) -> str:
    rows = []
    for ch in chapters:
        figure = (f'<img src="{html.escape(ch.figure)}" alt="first figure of {html.escape(ch.notebook)}">'
                  if ch.figure else '<span class="none">no figure</span>')
        colour = _STATUS_COLOUR.get(ch.status, "#57606a")
        errors = f" ({ch.errors} error cell{'s' if ch.errors != 1 else ''})" if ch.errors else ""
        rows.append(
            f'<tr><td><a href="{html.escape(ch.page)}">{html.escape(ch.title)}</a>'
            f'<div class="file">{html.escape(ch.notebook)}</div></td>'
            f'<td class="status" style="color:{colour}">{html.escape(ch.status)}{errors}</td>'
            f'<td class="num">{ch.seconds:.0f} s</td><td class="fig">{figure}</td></tr>')
    total = sum(ch.seconds for ch in chapters)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>H2ARN course ({html.escape(profile)} profile)</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 62rem; margin: 2rem auto; color: #1f2328; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border-bottom: 1px solid #d0d7de; padding: .5rem; text-align: left; vertical-align: middle; }}
td.num {{ text-align: right; white-space: nowrap; }} td.status {{ font-weight: 600; }}
td.fig img {{ max-height: 7rem; max-width: 16rem; }} .file {{ color: #57606a; font-size: .85em; }}
.none {{ color: #57606a; font-style: italic; }}
</style></head><body>
<h1>H2ARN: hyperbolic text-3D retrieval, the course</h1>
<p>Chapters as executed by <code>./course run --profile {html.escape(profile)}</code>
(status and time as papermill recorded them, {total:.0f} s in all). Each page holds the chapter's
outputs and figures; open the notebook in JupyterLab to change and rerun it.</p>
<table><thead><tr><th>chapter</th><th>status</th><th>time</th><th>first figure</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table></body></html>
"""


def write_site(executed_dir: Path, site_dir: Path, profile: str = "ci") -> Path:
    """Write ``site_dir/index.html`` and one page per executed notebook in ``executed_dir``; return the index.

    Pages of notebooks no longer in ``executed_dir`` are left alone (nothing is deleted); the index lists
    only what is there now.
    """
    results: list[NotebookResult] = executed_summary(executed_dir)
    if not results:
        raise FileNotFoundError(f"{executed_dir}: no executed notebooks to publish; "
                                f"run `./course run --profile {profile}` first")
    (site_dir / "figures").mkdir(parents=True, exist_ok=True)
    chapters = []
    for result in results:
        path = executed_dir / result.notebook
        stem = path.stem
        try:
            nb = json.loads(path.read_text(encoding="utf-8"))
            page_html, math = _export_html(path)
        except (OSError, ValueError) as exc:   # unreadable or not a notebook: listed, not published
            chapters.append(SiteChapter(result.notebook, stem, "invalid", result.seconds, "", None, 0))
            print(f"[h2arn.course] {path}: not published ({exc})")
            continue
        (site_dir / f"{stem}.html").write_text(page_html, encoding="utf-8")
        if math.converted or math.failed:
            print(f"[h2arn.course] {stem}.html: {math.converted} formulas as MathML, {len(math.failed)} left as "
                  f"LaTeX" + (f" (first: {math.failed[0]!r})" if math.failed else ""))
        png = first_figure(nb)
        figure = None
        if png:
            (site_dir / "figures" / f"{stem}.png").write_bytes(png)
            figure = f"figures/{stem}.png"
        chapters.append(SiteChapter(result.notebook, chapter_title(nb, stem), result.status, result.seconds,
                                    f"{stem}.html", figure, _error_cells(nb)))
    index = site_dir / "index.html"
    index.write_text(_index_html(chapters, profile), encoding="utf-8")
    return index
