"""Formulas of the course site as MathML, written when the site is built, so pages show math offline.

nbconvert leaves LaTeX in the page for MathJax, which it loads from a CDN: without internet (our students
and CI only reach package registries) every formula shows as raw source. Here the markdown of each cell
(and ``text/markdown`` / ``text/latex`` outputs) goes through nbconvert's own math-aware markdown parser,
but each formula is converted with ``latex2mathml`` into MathML, which browsers render natively (MathML
Core, Chromium >= 109, Firefox, Safari). The pages then load no script from the network for math (nor
require.js, which static pages do not need).

What counts as math: ``$...$``, ``$$...$$``, ``\\begin{env}...\\end{env}``, and ``\\(...\\)``,
``\\[...\\]`` with one backslash as a LaTeX author writes them or with two, the only form nbconvert takes
(markdown reads ``\\(`` as an escaped parenthesis). Code spans and code blocks are never math. As in
pandoc, an inline ``$`` opens only before a non-space and closes only after a non-space and not before a
digit, so "costs $5 or $6" stays text.

A formula latex2mathml rejects, or converts into something malformed (an unknown command kept as text,
a fraction with one part, an unbalanced brace), stays visible as its LaTeX source in
``<code class="h2arn-math-failed">`` and is counted in ``MathCount.failed``; nothing raises.
"""
from __future__ import annotations

import html
import re
import unicodedata
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import jinja2
from latex2mathml.converter import convert
from nbconvert import HTMLExporter
from nbconvert.filters.markdown_mistune import (IPythonRenderer, MarkdownWithMath, MathBlockParser,
                                                MathInlineParser)

__all__ = ["MathCount", "latex_to_html", "latex_output_to_html", "markdown_to_html", "OfflineMathHTMLExporter"]


@dataclass
class MathCount:
    """Formulas of one page: how many became MathML, and the LaTeX source of those that did not."""
    converted: int = 0
    failed: list[str] = field(default_factory=list)


# MathML elements and the number of children each must have: a LaTeX error such as ``\frac{1`` comes out
# of latex2mathml as a fraction with one part instead of an exception.
_ARITY = {"mfrac": 2, "msub": 2, "msup": 2, "msubsup": 3, "munder": 2, "mover": 2, "munderover": 3,
          "mroot": 2}
_MATHML_NS = "{http://www.w3.org/1998/Math/MathML}"
# Escapes that latex2mathml leaves in \text{...}: ``\text{pc\_idx}`` must read "pc_idx".
_TEXT_ESCAPE = re.compile(r"\\([_%$#{}])")
_MTEXT = re.compile(r"(<mtext[^>]*>)([^<]*)(</mtext>)")
# amsmath's inner alignment, which latex2mathml does not know, is the unnumbered align* it does know.
_ALIGNED = re.compile(r"\\(begin|end)\{(?:aligned|split)\}")


_VARIANT_PREFIX = {"bold": "MATHEMATICAL BOLD", "italic": "MATHEMATICAL ITALIC",
                   "bold-italic": "MATHEMATICAL BOLD ITALIC", "script": "MATHEMATICAL SCRIPT",
                   "bold-script": "MATHEMATICAL BOLD SCRIPT", "double-struck": "MATHEMATICAL DOUBLE-STRUCK",
                   "fraktur": "MATHEMATICAL FRAKTUR", "bold-fraktur": "MATHEMATICAL BOLD FRAKTUR",
                   "sans-serif": "MATHEMATICAL SANS-SERIF", "bold-sans-serif": "MATHEMATICAL SANS-SERIF BOLD",
                   "sans-serif-italic": "MATHEMATICAL SANS-SERIF ITALIC", "monospace": "MATHEMATICAL MONOSPACE"}
# Letters the Mathematical Alphanumeric block leaves out because Letterlike Symbols has them (script L = U+2112).
_LETTERLIKE_PREFIX = {"script": "SCRIPT", "double-struck": "DOUBLE-STRUCK", "fraktur": "BLACK-LETTER"}
_VARIANT_MI = re.compile(r'<(mi|mn) mathvariant="([a-z-]+)">([^<&]|&#x[0-9A-Fa-f]+;)</\1>')
# latex2mathml writes \operatorname{relu} as an operator, <mo>relu</mo>, which MathML spaces like an unknown
# binary operator ("relu ( x )"); as an identifier it reads like \cosh and \log do.
_NAMED_OPERATOR = re.compile(r"<mo>([A-Za-z]{2,})</mo>")


def _styled_letter(m: re.Match) -> str:
    """``<mi mathvariant="script">L</mi>`` as ``<mi>ℒ</mi>``: MathML Core (Chromium) ignores mathvariant
    except "normal", so ``\\mathcal L`` would show a plain italic L; the styled Unicode letter shows 𝓛."""
    tag, variant, char = m[1], m[2], html.unescape(m[3])
    if variant not in _VARIANT_PREFIX:
        return m[0]
    letter = re.sub(r"^(LATIN|GREEK) (CAPITAL|SMALL) LETTER ", r"\2 ", unicodedata.name(char, ""))
    for name in (f"{_VARIANT_PREFIX[variant]} {letter}", f"{_LETTERLIKE_PREFIX.get(variant, '?')} {letter}"):
        try:
            return f"<{tag}>{unicodedata.lookup(name)}</{tag}>"
        except KeyError:
            continue
    return m[0]


def _braces_balanced(latex: str) -> bool:
    """Whether every group ``{`` closes (latex2mathml reads ``x^{2`` as x² and ``a}`` as a brace glyph)."""
    depth = 0
    for brace in re.sub(r"\\[\\{}]", "", latex):
        depth += {"{": 1, "}": -1}.get(brace, 0)
        if depth < 0:
            return False
    return depth == 0


def _checked_mathml(latex: str, display: bool) -> str:
    """MathML of ``latex``; raises ValueError when latex2mathml fails or its result is malformed."""
    if not _braces_balanced(latex):
        raise ValueError("unbalanced braces")
    latex = _ALIGNED.sub(r"\\\1{align*}", latex)
    try:
        mathml = convert(latex, display="block" if display else "inline")
    except Exception as exc:   # latex2mathml raises its own errors and plain IndexError/KeyError alike
        raise ValueError(f"latex2mathml: {type(exc).__name__}: {exc}") from exc
    mathml = _NAMED_OPERATOR.sub(r"<mi>\1</mi>", _VARIANT_MI.sub(_styled_letter, mathml))
    mathml = _MTEXT.sub(lambda m: m[1] + _TEXT_ESCAPE.sub(r"\1", m[2]) + m[3], mathml)
    try:
        root = ET.fromstring(mathml)
    except ET.ParseError as exc:
        raise ValueError(f"not well-formed MathML ({exc})") from exc
    for el in root.iter():
        tag = el.tag.removeprefix(_MATHML_NS)
        if tag in _ARITY and len(el) != _ARITY[tag]:
            raise ValueError(f"<{tag}> with {len(el)} parts instead of {_ARITY[tag]}")
        if tag != "mtext" and el.text and "\\" in el.text:
            raise ValueError(f"unknown command {el.text.strip()}")
    return mathml


def latex_to_html(latex: str, *, display: bool, count: MathCount, source: str | None = None) -> str:
    """One formula as ``<math>``, or as its LaTeX ``source`` (with delimiters) in a ``<code>`` if it fails."""
    try:
        mathml = _checked_mathml(latex.strip(), display)
    except ValueError as exc:
        count.failed.append(latex)
        shown = source if source is not None else latex
        return (f'<code class="h2arn-math-failed" title="formula not converted: {html.escape(str(exc))}">'
                f'{html.escape(shown, quote=False)}</code>')
    count.converted += 1
    return mathml


# \( \) and \[ \] with one backslash or two (nbconvert takes only the doubled form).
_OPEN_PAREN, _CLOSE_PAREN = r"(?<!\\)\\\\?\(", r"(?<!\\)\\\\?\)"
_OPEN_BRACKET, _CLOSE_BRACKET = r"(?<!\\)\\\\?\[", r"(?<!\\)\\\\?\]"
# pandoc's rule for $: opens before a non-space, closes after a non-space and not before a digit.
_INLINE_DOLLAR = r"(?s:(?<![$\\])\$(?![\s$])(?P<math_inline_tex>.+?)(?<![\s$\\])\$(?!\d))"


class _OfflineMathBlockParser(MathBlockParser):
    SPECIFICATION = {
        **MathBlockParser.SPECIFICATION,
        "multiline_math": (r"(?s:(?<!\\)[$]{2}.*?(?<!\\)[$]{2}"
                           rf"|{_OPEN_BRACKET}.*?{_CLOSE_BRACKET}"
                           r"|\\begin\{(?P<math_env_name>[a-z]*\*?)\}.*?\\end\{(?P=math_env_name)\})"),
    }


class _OfflineMathInlineParser(MathInlineParser):
    SPECIFICATION = {
        **MathInlineParser.SPECIFICATION,
        "block_math_latex": rf"(?s:{_OPEN_BRACKET}(?P<math_block_latex>.*?){_CLOSE_BRACKET})",
        "inline_math_tex": _INLINE_DOLLAR,
        "inline_math_latex": rf"(?s:{_OPEN_PAREN}(?P<math_inline_latex>.*?){_CLOSE_PAREN})",
    }


class _MathMLRenderer(IPythonRenderer):
    """nbconvert's markdown renderer with formulas written as MathML instead of LaTeX for MathJax."""

    def __init__(self, *args, count: MathCount, **kwargs):
        super().__init__(*args, **kwargs)
        self.count = count

    def block_math(self, body: str) -> str:
        return latex_to_html(body, display=True, count=self.count, source=f"$${body}$$")

    def inline_math(self, body: str) -> str:
        return latex_to_html(body, display=False, count=self.count, source=f"${body}$")

    def latex_environment(self, name: str, body: str) -> str:
        env = f"\\begin{{{name}}}{body}\\end{{{name}}}"
        return latex_to_html(env, display=True, count=self.count)


def markdown_to_html(source: str, count: MathCount, **renderer_options) -> str:
    """Markdown as HTML with its formulas as MathML (``renderer_options`` go to nbconvert's renderer)."""
    renderer = _MathMLRenderer(escape=False, count=count, **renderer_options)
    return MarkdownWithMath(renderer=renderer, block=_OfflineMathBlockParser(),
                            inline=_OfflineMathInlineParser(hard_wrap=False)).render(source)


_LATEX_OUTPUT_MATH = re.compile(
    r"(?s)\$\$(?P<dd>.+?)\$\$|\\\[(?P<br>.+?)\\\]|\\\((?P<pa>.+?)\\\)|\$(?P<d>.+?)\$"
    r"|(?P<env>\\begin\{(?P<name>[A-Za-z]+\*?)\}.*?\\end\{(?P=name)\})")


def latex_output_to_html(text: str, count: MathCount) -> str:
    """A ``text/latex`` output (IPython's ``Latex``, sympy's ``$\\displaystyle ...$``): formulas as MathML,
    the text around them escaped; an output without delimiters is one display formula, as in JupyterLab."""
    if not _LATEX_OUTPUT_MATH.search(text):
        return latex_to_html(text, display=True, count=count)
    parts, pos = [], 0
    for m in _LATEX_OUTPUT_MATH.finditer(text):
        parts.append(html.escape(text[pos:m.start()], quote=False))
        inline = m["pa"] if m["pa"] is not None else m["d"]
        body = inline if inline is not None else next(g for g in (m["dd"], m["br"], m["env"]) if g is not None)
        parts.append(latex_to_html(body, display=inline is None, count=count, source=m[0]))
        pos = m.end()
    parts.append(html.escape(text[pos:], quote=False))
    return "".join(parts)


# The lab page without the CDN scripts (MathJax, require.js), with styles for the MathML and for failures.
_PAGE_TEMPLATE = r"""{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{% block extra_css %}
<style>
math[display="block"] { display: block math; margin: .6em 0; overflow-x: auto; overflow-y: hidden; }
code.h2arn-math-failed { color: #9a6700; }
</style>
{% endblock extra_css %}
{% block data_latex scoped %}
<div class="jp-RenderedLatex jp-OutputArea-output {{ extra_class }}" data-mime-type="text/latex">
{{ output.data['text/latex'] | latex_output2html }}
</div>
{%- endblock data_latex %}
"""


class OfflineMathHTMLExporter(HTMLExporter):
    """The lab HTMLExporter with formulas as MathML and no MathJax; ``resources["math"]`` is a MathCount."""

    def __init__(self, **kwargs):
        kwargs.setdefault("template_name", "lab")
        super().__init__(raw_template=_PAGE_TEMPLATE, **kwargs)
        self._count = MathCount()

    @jinja2.pass_context
    def markdown2html(self, context, source):
        """The parent's filter (attachments, images, anchors), formulas as MathML."""
        cell = context.get("cell", {})
        return markdown_to_html(
            source, self._count, attachments=cell.get("attachments", {}), embed_images=self.embed_images,
            path=context.get("resources", {}).get("metadata", {}).get("path", ""),
            anchor_link_text=self.anchor_link_text, exclude_anchor_links=self.exclude_anchor_links,
            **self.lexer_options)

    def latex_output2html(self, text: str) -> str:
        return latex_output_to_html(text, self._count)

    def default_filters(self):
        yield from super().default_filters()
        yield ("latex_output2html", self.latex_output2html)

    def from_notebook_node(self, nb, resources=None, **kw):
        self._count = MathCount()
        body, resources = super().from_notebook_node(nb, resources, **kw)
        resources["math"] = self._count
        return body, resources
