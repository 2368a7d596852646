"""The data report in HTML: sections shared by the fragment embedded in the run report and the page."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from include.lifecycle import report
from include.lifecycle.evaluate_data.figures import _key

_NUM_STATS = ["count", "missing_share", "mean", "std", "min", "p01", "p25", "p50", "p75", "p99", "max", "zeros_share"]


def _pct(v: Any, digits: int = 2) -> str | None:
    return None if v is None else f"{float(v):.{digits}%}"


def _figures(pngs: Mapping[str, bytes], names: Iterable[str], used: set[str]) -> str:
    parts = []
    for n in names:
        if n in pngs and n not in used:
            used.add(n)
            parts.append(f"<figure>{report.png_to_img(pngs[n], n)}<figcaption>{report.escape(n)}</figcaption></figure>")
    return "".join(parts)


def _corr_cell(v: Any) -> report.Markup:
    if v is None:
        return report.raw("")
    a = min(abs(float(v)), 1.0) * 0.6
    rgb = "214,39,40" if v > 0 else "31,119,180"
    return report.raw(f'<span style="background:rgba({rgb},{a:.2f});padding:0 4px">{float(v):.2f}</span>')


def _psi_status(v: float | None, limit: float | None) -> report.Markup:
    if v is None:
        return report.badge(None)
    if limit is not None and v > limit:
        return report.badge(False, "drifted")
    if v > 0.1:
        return report.badge(None, "moderate")
    return report.badge(True, "stable")


def eda_sections(
    prof: Mapping[str, Any],
    pngs: Mapping[str, bytes],
    verdict: Mapping[str, Any],
    drift_result: Mapping[str, Any] | None,
    etl_counts: Mapping[str, Any] | None,
    *,
    max_drift_psi: float | None = None,
) -> list[tuple[str, str]]:
    """The data report as ``(heading, html)`` sections (shared by the fragment and the page)."""
    used: set[str] = set()
    secs: list[tuple[str, str]] = []
    overall = prof.get("overall") or {}
    tgt = prof.get("target") or {}

    # verdict
    ok = bool(verdict.get("passed"))
    head = f'<p><span class="verdict {"ok" if ok else "bad"}">Data is {report.escape(verdict.get("verdict", "?"))}</span></p>'
    rows = [
        {"check": c["name"], "result": report.badge(c["passed"]), "detail": c["detail"]}
        for c in verdict.get("checks") or []
    ]
    secs.append(("Data quality verdict", head + report.table(rows, ["check", "result", "detail"])))

    if etl_counts:
        secs.append(("ETL counts", report.kv_table(etl_counts)))

    ov = dict(overall)
    for k in ("duplicate_rows_share", "missing_cells_share", "time_missing_share"):
        if k in ov:
            ov[k] = _pct(ov[k])
    if ov.get("memory_mb") is not None:
        ov["memory_mb"] = round(float(ov["memory_mb"]), 2)
    secs.append(("Overview", report.kv_table(ov)))

    # target
    if tgt.get("column"):
        t = dict(tgt)
        for k in ("base_rate", "missing_share"):
            if t.get(k) is not None:
                t[k] = _pct(t[k], 4 if k == "base_rate" else 2)
        title = "Class balance" if tgt.get("type") == "binary" else "Target"
        secs.append((title, report.kv_table(t) + _figures(pngs, ["target_distribution"], used)))

    # dtypes
    miss = prof.get("missingness") or {}
    role = {c: "numeric" for c in prof.get("numeric") or {}} | {c: "categorical" for c in prof.get("categorical") or {}}
    if tgt.get("column"):
        role[tgt["column"]] = "target"
    if overall.get("time_column"):
        role[overall["time_column"]] = "time"
    dt_rows = [
        {"column": c, "dtype": t, "role": role.get(c, ""), "missing": _pct(miss.get(c))}
        for c, t in (prof.get("dtypes") or {}).items()
    ]
    secs.append(("Columns and types", report.table(dt_rows, ["column", "dtype", "role", "missing"])))

    # numeric
    num = prof.get("numeric") or {}
    if num:
        n_rows = [{"column": c, **{k: p.get(k) for k in _NUM_STATS}} for c, p in num.items()]
        for r in n_rows:
            r["missing_share"], r["zeros_share"] = _pct(r["missing_share"]), _pct(r["zeros_share"])
        dist = [k for k in pngs if k.startswith("dist_")]
        html = f'<div class="scroll">{report.table(n_rows, ["column", *_NUM_STATS])}</div>' + _figures(pngs, dist, used)
        secs.append(("Numeric attributes", html))

    # categorical
    cat = prof.get("categorical") or {}
    if cat:
        c_rows = [
            {
                "column": c,
                "count": p.get("count"),
                "missing_share": _pct(p.get("missing_share")),
                "n_unique": p.get("n_unique"),
                "top values": ", ".join(f"{v} ({s:.2%})" for v, s in (p.get("top") or [])[:5]),
            }
            for c, p in cat.items()
        ]
        parts = [report.table(c_rows, ["column", "count", "missing_share", "n_unique", "top values"])]
        for c, p in cat.items():
            rate_key = "target_rate" if "target_rate" in p else ("target_mean" if "target_mean" in p else None)
            rates = dict(map(tuple, p.get(rate_key) or [])) if rate_key else {}
            top_rows = []
            for v, s in p.get("top") or []:
                row: dict[str, Any] = {"value": v, "share": _pct(s)}
                if rate_key:
                    r = rates.get(v)
                    row[rate_key.replace("_", " ")] = _pct(r, 3) if rate_key == "target_rate" else r
                top_rows.append(row)
            parts.append(f"<h3>{report.escape(c)}</h3>" + report.table(top_rows))
            parts.append(_figures(pngs, [k for k in pngs if k == _key("target_rate_by", c, {})], used))
        parts.append(_figures(pngs, [k for k in pngs if k.startswith("target_rate_by_")], used))
        secs.append(("Categorical attributes", "".join(parts)))

    # missingness
    m_rows = [{"column": c, "missing share": _pct(s)} for c, s in sorted(miss.items(), key=lambda kv: -(kv[1] or 0))]
    secs.append(("Missing values", report.table(m_rows, ["column", "missing share"])))

    # correlations
    corr = prof.get("correlations") or {}
    if corr:
        cols = list(corr)
        c_rows = [{"": a, **{b: _corr_cell(corr[a].get(b)) for b in cols}} for a in cols]
        html = f'<div class="scroll">{report.table(c_rows, ["", *cols])}</div>'
        secs.append(("Correlations", html + _figures(pngs, ["correlation_heatmap"], used)))

    # drift
    if drift_result is not None:
        if not drift_result.get("reference"):
            html = '<p class="note">No previous run to compare with: drift is not measured on the first run.</p>'
        else:
            approx = set(drift_result.get("approximate") or [])
            d_rows = [
                {"column": c, "PSI": v, "status": _psi_status(v, max_drift_psi), "exact": c not in approx}
                for c, v in sorted((drift_result.get("columns") or {}).items(), key=lambda kv: -(kv[1] or 0))
            ]
            html = (
                f"<p>Reference: {report.escape(drift_result['reference'])}; max PSI "
                f"{report.fmt(drift_result.get('max_psi'))}. PSI &lt; 0.1 stable, 0.1-0.25 moderate, "
                "&gt; 0.25 major shift.</p>" + report.table(d_rows, ["column", "PSI", "status", "exact"])
            )
        secs.append(("Drift against the previous run", html))

    # time
    by_day = prof.get("by_day") or []
    if by_day or "time_trend" in pngs:
        cols = ["day", "rows", "positives", "rate"] if tgt.get("type") == "binary" else ["day", "rows", "mean"]
        if not tgt.get("type"):
            cols = ["day", "rows"]
        html = _figures(pngs, ["time_trend"], used) + f'<div class="scroll">{report.table(list(by_day), cols)}</div>'
        secs.append(("Over time", html))

    rest = [k for k in pngs if k not in used]
    if rest:
        secs.append(("Other plots", _figures(pngs, rest, used)))
    return secs


def render_eda_section(
    prof: Mapping[str, Any],
    pngs: Mapping[str, bytes],
    verdict: Mapping[str, Any],
    drift_result: Mapping[str, Any] | None,
    etl_counts: Mapping[str, Any] | None,
) -> str:
    """The data report as one HTML fragment (``<div class="eda">``) to embed in a bigger report."""
    parts = []
    for heading, body in eda_sections(prof, pngs, verdict, drift_result, etl_counts, max_drift_psi=_limit(verdict)):
        anchor = "eda-" + report.slug(heading)
        parts.append(f'<h3 id="{anchor}">{report.escape(heading)}<a class="anchor" href="#{anchor}">#</a></h3>\n{body}')
    return '<div class="eda">\n' + "\n".join(parts) + "\n</div>"


def _limit(verdict: Mapping[str, Any]) -> float | None:
    """The drift limit the gate used (to colour the drift table), if the verdict has a drift check."""
    for c in verdict.get("checks") or []:
        if c.get("name") == "drift" and c.get("limit") is not None:
            return float(c["limit"])
    return None


def render_eda_html(
    title: str,
    prof: Mapping[str, Any],
    pngs: Mapping[str, bytes],
    verdict: Mapping[str, Any],
    drift_result: Mapping[str, Any] | None,
    etl_counts: Mapping[str, Any] | None,
) -> str:
    """A standalone HTML page of the data report (:func:`report.page` around the same sections)."""
    overall = prof.get("overall") or {}
    sub = (
        f"{overall.get('rows', 0):,} rows x {overall.get('columns', 0)} columns - data is {verdict.get('verdict', '?')}"
    )
    if overall.get("time_min") and overall.get("time_max"):
        sub += f" - {str(overall['time_min'])[:10]} to {str(overall['time_max'])[:10]}"
    return report.page(
        title, eda_sections(prof, pngs, verdict, drift_result, etl_counts, max_drift_psi=_limit(verdict)), subtitle=sub
    )
