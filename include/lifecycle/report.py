"""A tiny HTML toolkit for standalone reports (the data report of section 3, the model report later).

Everything here returns strings of HTML. Text is always escaped with :func:`html.escape`;
only values wrapped in :class:`Markup` (see :func:`raw`) and the section bodies handed to
:func:`page` are inserted as they are, because they are HTML fragments built by this module.
Images are embedded as base64 data URIs, so a report is one self-contained file.

Nothing here imports airflow or pyplot: figures are drawn on :class:`matplotlib.figure.Figure`
objects rendered by the Agg canvas, which keeps no global state between threads.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "Markup",
    "badge",
    "escape",
    "fig_to_png",
    "fmt",
    "join",
    "kv_table",
    "page",
    "png_to_img",
    "raw",
    "slug",
    "table",
]


class Markup(str):
    """A string of trusted HTML: :func:`fmt` and the table helpers insert it without escaping."""

    __slots__ = ()


def raw(fragment: str) -> Markup:
    """Mark an HTML fragment as trusted so the table helpers do not escape it."""
    return Markup(fragment)


def escape(text: Any) -> str:
    """Escape any value for HTML text or attribute context (``str()`` first)."""
    return html.escape("" if text is None else str(text), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """Format one cell value as escaped HTML.

    ``None`` and NaN become an empty cell, floats get ``digits`` significant digits, nested
    dicts become a small key/value table, lists are joined with commas, :class:`Markup` is kept.
    """
    if isinstance(value, Markup):
        return str(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "f"):
        v = float(value)
        if math.isnan(v):
            return ""
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        if v == int(v) and abs(v) < 1e15:
            return f"{int(v):,}" if abs(v) >= 1000 else str(int(v))
        return escape(f"{v:.{digits}g}")
    if isinstance(value, int) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iu"):
        v = int(value)
        return f"{v:,}" if abs(v) >= 1000 else str(v)
    if isinstance(value, (_dt.datetime, _dt.date)):
        return escape(value.isoformat())
    if isinstance(value, Mapping):
        return kv_table(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v, digits) for v in value)
    return escape(value)


def table(rows: list[dict], columns: list[str] | None = None, *, digits: int = 4, css_class: str = "") -> str:
    """An HTML table with one row per dict; ``columns`` picks and orders the columns.

    Without ``columns`` the union of the dicts' keys is used, in order of first appearance.
    An empty ``rows`` gives a short "no rows" paragraph instead of an empty table.
    """
    if columns is None:
        seen: dict[str, None] = {}
        for r in rows:
            for k in r:
                seen.setdefault(str(k), None)
        columns = list(seen)
    if not rows:
        return '<p class="empty">(no rows)</p>'
    cls = f' class="{escape(css_class)}"' if css_class else ""
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        cells = "".join(f"<td>{fmt(r.get(c), digits)}</td>" for c in columns)
        body.append(f"<tr>{cells}</tr>")
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def kv_table(d: Mapping[str, Any], *, digits: int = 4) -> str:
    """A two-column key/value table; nested dicts become nested tables."""
    if not d:
        return '<p class="empty">(none)</p>'
    body = "".join(f'<tr><th scope="row">{escape(k)}</th><td>{fmt(v, digits)}</td></tr>' for k, v in d.items())
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def badge(ok: bool | None, text: str | None = None) -> Markup:
    """A coloured pass/fail label (``None`` gives a neutral one)."""
    if ok is None:
        return Markup(f'<span class="badge neutral">{escape(text or "n/a")}</span>')
    label = text or ("pass" if ok else "fail")
    return Markup(f'<span class="badge {"ok" if ok else "bad"}">{escape(label)}</span>')


def png_to_img(png: bytes, alt: str) -> str:
    """An ``<img>`` element embedding PNG bytes as a base64 data URI."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}" loading="lazy">'


def fig_to_png(fig: Any, dpi: int = 90) -> bytes:
    """Render a matplotlib figure to PNG bytes (tight bounding box) and release it.

    Figures built as ``matplotlib.figure.Figure()`` get an Agg canvas here, so no backend
    or pyplot state is touched; a figure that came from pyplot is closed after rendering.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    manager = getattr(fig.canvas, "manager", None)
    if manager is None and not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        if manager is not None:  # a pyplot figure: drop it from pyplot's registry
            import matplotlib.pyplot as plt

            plt.close(fig)
        else:
            fig.clear()
    return buf.getvalue()


_SLUG_UNSAFE = re.compile(r"[^a-z0-9]+")


def slug(text: str) -> str:
    """A lower-case anchor id made of letters, digits and dashes."""
    return _SLUG_UNSAFE.sub("-", str(text).lower()).strip("-") or "section"


_CSS = """
:root { --fg:#1f2933; --muted:#616e7c; --line:#d9e2ec; --bg:#ffffff; --soft:#f5f7fa; --accent:#1f6feb;
        --ok:#1a7f37; --okbg:#dafbe1; --bad:#b42318; --badbg:#fee4e2; }
* { box-sizing: border-box; }
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0; line-height: 1.45; font-size: 14px; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 32px 64px; }
header h1 { margin: 0 0 4px; font-size: 26px; }
header p.subtitle { margin: 0 0 16px; color: var(--muted); }
nav.toc { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 10px 16px;
          margin: 12px 0 24px; }
nav.toc ol { margin: 4px 0 0; padding-left: 20px; columns: 2; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
section { margin: 28px 0; }
h2 { font-size: 20px; border-bottom: 2px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 16px; margin: 20px 0 8px; }
h2 a.anchor, h3 a.anchor { color: var(--muted); margin-left: 6px; font-size: 0.8em; visibility: hidden; }
h2:hover a.anchor, h3:hover a.anchor { visibility: visible; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
thead th { background: var(--soft); position: sticky; top: 0; }
td { font-variant-numeric: tabular-nums; }
table.kv th { background: var(--soft); font-weight: 600; white-space: nowrap; }
table.kv table.kv { margin: 0; }
.scroll { overflow-x: auto; max-width: 100%; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600; font-size: 12px; }
.badge.ok { color: var(--ok); background: var(--okbg); }
.badge.bad { color: var(--bad); background: var(--badbg); }
.badge.neutral { color: var(--muted); background: var(--soft); }
.verdict { font-size: 18px; font-weight: 700; padding: 8px 14px; border-radius: 6px; display: inline-block; }
.verdict.ok { color: var(--ok); background: var(--okbg); }
.verdict.bad { color: var(--bad); background: var(--badbg); }
figure { display: inline-block; margin: 8px 12px 16px 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 12px; }
p.empty, p.note { color: var(--muted); }
footer { color: var(--muted); font-size: 12px; margin-top: 40px; }
"""


def page(title: str, sections: list[tuple[str, str]], subtitle: str = "") -> str:
    """A complete standalone HTML5 document with inline CSS and a table of contents.

    ``sections`` is a list of ``(heading, html_fragment)``; headings are escaped and get
    unique anchors, fragments are inserted as they are (they are HTML built by this module).
    """
    used: dict[str, int] = {}
    toc, body = [], []
    for heading, fragment in sections:
        anchor = slug(heading)
        if anchor in used:
            used[anchor] += 1
            anchor = f"{anchor}-{used[anchor]}"
        else:
            used[anchor] = 1
        toc.append(f'<li><a href="#{anchor}">{escape(heading)}</a></li>')
        body.append(
            f'<section id="{anchor}"><h2>{escape(heading)}<a class="anchor" href="#{anchor}">#</a></h2>'
            f"\n{fragment}\n</section>"
        )
    sub = f'<p class="subtitle">{escape(subtitle)}</p>' if subtitle else ""
    nav = f'<nav class="toc"><strong>Contents</strong><ol>{"".join(toc)}</ol></nav>' if toc else ""
    generated = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<header><h1>{escape(title)}</h1>{sub}</header>\n{nav}\n" + "\n".join(body) + "\n"
        f"<footer>Generated {escape(generated)}</footer>\n</main>\n</body>\n</html>\n"
    )


def join(fragments: Iterable[str]) -> str:
    """Concatenate HTML fragments with newlines (skipping empty ones)."""
    return "\n".join(f for f in fragments if f)
