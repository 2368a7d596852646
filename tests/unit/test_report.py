"""Tests of the tiny HTML toolkit."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

from matplotlib.figure import Figure

from include.lifecycle import report


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.starts: dict[str, int] = {}
        self.ends: dict[str, int] = {}
        self.ids: list[str] = []
        self.hrefs: list[str] = []
        self.imgs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts[tag] = self.starts.get(tag, 0) + 1
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(a["id"])
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
        if tag == "img":
            self.imgs.append(a.get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        self.ends[tag] = self.ends.get(tag, 0) + 1

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Tags:
    p = _Tags()
    p.feed(html)
    p.close()
    return p


def _png() -> bytes:
    fig = Figure(figsize=(2, 2))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1])
    return report.fig_to_png(fig)


def test_fig_to_png_and_img() -> None:
    png = _png()
    assert png.startswith(b"\x89PNG")
    img = report.png_to_img(png, 'a "quoted" <alt>')
    p = _parse(img)
    assert p.imgs[0].startswith("data:image/png;base64,")
    assert base64.b64decode(p.imgs[0].split(",", 1)[1]) == png
    assert "&quot;quoted&quot; &lt;alt&gt;" in img


def test_table_escapes_and_formats() -> None:
    html = report.table(
        [{"name": "<script>", "value": 0.123456789, "n": 12345, "missing": None}, {"name": "b", "extra": True}],
        ["name", "value", "n", "missing"],
    )
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "0.1235" in html and "12,345" in html
    p = _parse(html)
    assert p.starts["tr"] == 3 and p.starts["th"] == 4 and p.starts["td"] == 8
    assert p.starts == p.ends
    assert report.table([]) == '<p class="empty">(no rows)</p>'
    # columns default to the union of keys, raw markup is kept
    html = report.table([{"a": report.raw("<b>x</b>")}, {"b": 1}])
    assert "<b>x</b>" in html and "<th>b</th>" in html


def test_kv_table_nested() -> None:
    html = report.kv_table({"rows": 10, "by rule": {"amount_range": 3, "<bad>": 1}, "float": float("nan")})
    p = _parse(html)
    assert p.starts["table"] == 2
    assert "&lt;bad&gt;" in html


def test_page_is_standalone_document() -> None:
    png = _png()
    html = report.page(
        "Report <1>",
        [("Summary", report.kv_table({"a": 1})), ("Plots", report.png_to_img(png, "p")), ("Summary", "<p>again</p>")],
        subtitle="sub & title",
    )
    assert html.startswith("<!DOCTYPE html>")
    p = _parse(html)
    for tag in ("html", "head", "body", "title", "style", "nav", "section"):
        assert p.starts.get(tag, 0) >= 1
        assert p.starts[tag] == p.ends.get(tag, 0), tag
    assert p.starts["section"] == 3
    assert "Report &lt;1&gt;" in html and "sub &amp; title" in html
    assert p.ids.count("summary") == 1 and "summary-2" in p.ids and "plots" in p.ids
    for anchor in ("#summary", "#summary-2", "#plots"):
        assert anchor in p.hrefs
    assert len(p.imgs) == 1 and p.imgs[0].startswith("data:image/png;base64,")
