"""The course site (build/site/): index and chapter pages, and the same pages in headless Chromium.

The page-building tests use small executed notebooks written here (no kernel, milliseconds). The browser
test opens the index and one chapter in headless Chromium where it is installed (skipped otherwise),
checks that every image loads, that no cell shows an error, that the formulas are laid out as MathML and
that no script comes from the network, and saves screenshots under build/site-check/. It uses real
executed chapters (one of them with formulas) when ``tests/test_notebooks.py`` has just written them
(build/notebooks/ci/), else the small ones.
"""
from __future__ import annotations

import base64
import functools
import http.server
import io
import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from h2arn.course import runner
from h2arn.course.site import first_figure, write_site
from h2arn.paths import build_dir

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _png() -> str:
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _executed(path: Path, title: str, *, figure: bool, error: bool = False, seconds: float = 3.0,
              markdown: str = "Some text.") -> Path:
    """An executed notebook as papermill leaves it: outputs and the papermill status metadata."""
    cell = new_code_cell("draw()")
    if figure:
        cell.outputs = [new_output("display_data", data={"image/png": _png(), "text/plain": "<Figure>"})]
    cells = [new_markdown_cell(f"# {title}\n\n{markdown}"), cell]
    if error:
        bad = new_code_cell("1 / 0")
        bad.outputs = [new_output("error", ename="ZeroDivisionError", evalue="division by zero",
                                  traceback=["ZeroDivisionError: division by zero"])]
        cells.append(bad)
    nb = new_notebook(cells=cells)
    nb.metadata["papermill"] = {"duration": seconds, "end_time": "2026-12-01T00:00:00",
                                "exception": True if error else None}
    nbformat.write(nb, path)
    return path


def test_index_lists_each_chapter_with_status_time_and_first_figure(tmp_path):
    executed = tmp_path / "executed"
    executed.mkdir()
    _executed(executed / "00_intro.ipynb", "00 · Intro", figure=True, seconds=12.4)
    _executed(executed / "01_broken.ipynb", "01 · Broken", figure=False, error=True)
    index = write_site(executed, tmp_path / "site")
    page = index.read_text(encoding="utf-8")
    assert '<a href="00_intro.html">00 · Intro</a>' in page and "12 s" in page
    assert '<img src="figures/00_intro.png"' in page
    assert (tmp_path / "site" / "figures" / "00_intro.png").read_bytes()[:4] == b"\x89PNG"
    assert "failed (1 error cell)" in page and "no figure" in page
    chapter = (tmp_path / "site" / "00_intro.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in chapter                    # the figure is in the page itself
    assert "celltag_h2arn-error" in (tmp_path / "site" / "01_broken.html").read_text(encoding="utf-8")


_MATH_MARKDOWN = r"""Inline $x_0^2$ and \(\langle x,y\rangle_L\), with $\mathcal L_{\text{cont}}$ and
$\operatorname{arcsinh}(\sqrt{c}\,d)$; code `$HOME and $PATH` is not math, nor is a price of $5 or $6.

$$d(x,y) = \tfrac{2}{\sqrt{c}}\,\operatorname{arcsinh}\!\big(\tfrac{\sqrt{c}}{2}\,\lVert x-y\rVert_L\big)$$

\[\cosh(\sqrt c\,d) = -c\langle x,y\rangle_L\]

A broken formula $\frac{1$ stays readable.

```python
total = "$$ not math $$"
```
"""


def test_formulas_become_mathml_and_the_page_needs_no_network(tmp_path, capsys):
    executed = tmp_path / "executed"
    executed.mkdir()
    path = _executed(executed / "01_math.ipynb", "01 · Math", figure=False, markdown=_MATH_MARKDOWN)
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].outputs = [new_output("display_data", data={"text/latex": r"$\displaystyle \frac{a}{b}$",
                                                            "text/plain": "a/b"}),
                           new_output("display_data", data={"text/markdown": r"mean $\mu = 0.5$",
                                                            "text/plain": "mean"})]
    nbformat.write(nb, path)
    write_site(executed, tmp_path / "site")
    page = (tmp_path / "site" / "01_math.html").read_text(encoding="utf-8")
    assert page.count("<math ") == 8 and page.count('display="block"') == 3   # 5 inline + 2 display + 1 latex
    assert "ℒ" in page and "<mtext>cont</mtext>" in page and "<mi>arcsinh</mi>" in page
    assert "<code>$HOME and $PATH</code>" in page and "a price of $5 or $6." in page
    assert '"$$ not math $$"' in page.replace("&quot;", '"')                  # code blocks untouched
    assert re.search(r'<code class="h2arn-math-failed"[^>]*>\$\\frac\{1\$</code>', page)
    assert not re.search(r"<script[^>]+src=[\"']https?:", page) and "mathjax" not in page.lower()
    assert "01_math.html: 8 formulas as MathML, 1 left as LaTeX" in capsys.readouterr().out


def test_first_figure_is_none_without_images():
    assert first_figure({"cells": [{"cell_type": "code", "outputs": [{"output_type": "stream"}]}]}) is None


def test_site_command_without_executed_notebooks_says_what_to_run(tmp_path, capsys):
    code = runner.main(["site", "--output-dir", str(tmp_path / "nothing"), "--site-dir", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no executed notebooks" in err[0] and "./course run" in err[0]
    assert not (tmp_path / "s" / "index.html").exists()


# ---------------------------------------------------------------------------------------------- browser

_CHECK_PAGE = """<!DOCTYPE html><html><body><pre id="result">pending</pre>
<iframe id="page" style="width:1200px;height:900px"></iframe>
<script>
const target = new URLSearchParams(location.search).get("page");
const frame = document.getElementById("page");
function report() {
  const doc = frame.contentDocument;
  const images = Array.from(doc.images);
  const broken = images.filter(img => !img.complete || img.naturalWidth === 0).map(img => img.src.slice(0, 80));
  const errorCells = doc.querySelectorAll(".celltag_h2arn-error, .celltag_papermill-error-cell-tag").length;
  const tracebacks = Array.from(doc.querySelectorAll(".jp-OutputArea-output"))
      .filter(el => el.textContent.includes("Traceback (most recent call last)")).length;
  const formulas = Array.from(doc.querySelectorAll("math"));
  const laidOut = formulas.filter(el => el.getBoundingClientRect().width > 0).length;
  const remoteScripts = Array.from(doc.scripts).map(s => s.src).filter(src => /^https?:/.test(src)
      && !src.startsWith(location.origin));
  const rawLatex = Array.from(doc.querySelectorAll(".jp-MarkdownOutput"))
      .filter(el => /\\$\\$|\\\\frac|\\\\langle/.test(el.innerText)).length;
  document.getElementById("result").textContent = JSON.stringify(
      {title: doc.title, images: images.length, broken, errorCells, tracebacks, formulas: formulas.length,
       laidOut, remoteScripts, rawLatex});
}
frame.addEventListener("load", () => setTimeout(report, 500));
frame.src = target;
</script></body></html>
"""


def _has_math(nb: dict) -> bool:
    return any(c.get("cell_type") == "markdown" and "$" in "".join(c.get("source", "")) for c in nb["cells"])


@pytest.fixture()
def served_site(tmp_path):
    """The site built from executed chapters, served on localhost (file:// pages cannot inspect iframes)."""
    executed = build_dir() / "notebooks" / "ci"
    with_figure = [(r.output, json.loads(r.output.read_text(encoding="utf-8")))
                   for r in runner.executed_summary(executed) if r.status == "ok"]
    with_figure = [(path, nb) for path, nb in with_figure if first_figure(nb) is not None]
    with_math = [path for path, nb in with_figure if _has_math(nb)]
    source = tmp_path / "executed"
    source.mkdir()
    if len(with_figure) >= 2 and with_math:              # two real chapters keep the test to seconds
        first = next(path for path, _ in with_figure if path != with_math[0])
        for path in sorted({first, with_math[0]}):     # the chapter checked below is the last: the one with math
            shutil.copy(path, source / path.name)
    else:
        _executed(source / "00_intro.ipynb", "00 · Intro", figure=True)
        # the chapters' own kind of math: no deliberately broken formula (kept as raw LaTeX on purpose)
        # and no code block (its "$$" is text, which the raw-LaTeX check below would count)
        good_math = _MATH_MARKDOWN.split("A broken formula")[0]
        _executed(source / "01_next.ipynb", "01 · Next", figure=True, markdown=good_math)
    site = tmp_path / "site"
    write_site(source, site)
    (site / "_check.html").write_text(_CHECK_PAGE, encoding="utf-8")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _chromium(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=120)


def _inspect(url: str, page: str) -> dict:
    proc = _chromium("--virtual-time-budget=20000", "--dump-dom", f"{url}/_check.html?page={page}")
    dom = proc.stdout
    start = dom.find('<pre id="result">')
    assert start >= 0, f"chromium printed no page for {page}: {proc.stderr[-500:]}"
    text = dom[start + len('<pre id="result">'):dom.find("</pre>", start)]
    assert text != "pending", f"{page} did not finish loading in headless Chromium"
    return json.loads(text.replace("&quot;", '"').replace("&amp;", "&"))


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_site_pages_load_in_headless_chromium(served_site):
    site, url = served_site
    chapter = sorted(p.name for p in site.glob("0*.html"))[-1]
    out = build_dir() / "site-check"
    out.mkdir(parents=True, exist_ok=True)
    for page in ("index.html", chapter):
        result = _inspect(url, page)
        assert result["images"] > 0, f"{page}: no images on the page"
        assert result["broken"] == [], f"{page}: images that did not load: {result['broken']}"
        assert result["errorCells"] == 0 and result["tracebacks"] == 0, f"{page}: a cell shows an error"
        assert result["remoteScripts"] == [], f"{page}: scripts from the network: {result['remoteScripts']}"
        if page == chapter:
            assert result["formulas"] > 0 and result["laidOut"] == result["formulas"], \
                f"{page}: {result['laidOut']} of {result['formulas']} formulas laid out as MathML"
            assert result["rawLatex"] == 0, f"{page}: {result['rawLatex']} markdown cells still show raw LaTeX"
        shot = out / f"{Path(page).stem}.png"
        _chromium("--window-size=1280,1600", "--virtual-time-budget=10000", f"--screenshot={shot}",
                  f"{url}/{page}")
        assert shot.is_file() and shot.stat().st_size > 10_000, f"no screenshot of {page} in {out}"
