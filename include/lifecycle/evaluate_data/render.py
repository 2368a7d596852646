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


def _psi_status(v: float | None, limit: float | None, noise: float | None = None) -> report.Markup:
    if v is None:
        return report.badge(None)
    if limit is not None and v > limit:
        if noise is not None and v <= noise:
            return report.badge(None, "within noise")
        return report.badge(False, "drifted")
    if v > 0.1:
        return report.badge(None, "moderate")
    return report.badge(True, "stable")


def _interval(d: Mapping[str, Any]) -> str:
    lo, hi = d.get("low"), d.get("high")
    return "" if lo is None or hi is None else f"{lo:.3f} - {hi:.3f}"


def _drift_html(drift_result: Mapping[str, Any], pngs: Mapping[str, bytes], used: set[str], limit: float | None) -> str:
    if not drift_result.get("reference"):
        why = drift_result.get("why") or "no reference: first model"
        return f'<p class="note">{report.escape(why)}: drift is not measured.</p>'
    compared = drift_result.get("compared") or {}
    if compared.get("kind") == "newest days" and compared.get("start"):
        what = f"the newest days of this window, [{compared['start'][:19]}, {compared['end'][:19]})"
    else:
        what = "every row of this data set"
    html = (
        f"<p>Reference: {report.escape(drift_result['reference'])}.<br>Compared: {report.escape(what)}, "
        f"{int(drift_result.get('current_rows') or 0):,} rows.</p>"
    )
    if drift_result.get("note"):
        html += f'<p class="note">{report.escape(drift_result["note"])}</p>'
    if drift_result.get("why"):
        return html + f'<p class="note">{report.escape(drift_result["why"])}</p>'
    approx = set(drift_result.get("approximate") or [])
    details = drift_result.get("details") or {}
    d_rows = [
        {
            "column": c,
            "PSI": v,
            "95% interval": _interval(details.get(c) or {}),
            "no-drift level": (details.get(c) or {}).get("noise"),
            "status": _psi_status(v, limit, (details.get(c) or {}).get("noise")),
            "exact": c not in approx,
        }
        for c, v in sorted((drift_result.get("columns") or {}).items(), key=lambda kv: -(kv[1] or 0))
    ]
    html += (
        f"<p>Max PSI {report.fmt(drift_result.get('max_psi'))}. PSI &lt; 0.1 stable, 0.1-0.25 moderate, "
        "&gt; 0.25 major shift; a column drifts when its PSI is above the limit and above its no-drift level "
        "(the 99th percentile of PSI between two samples of the reference's distribution at these sizes).</p>"
    )
    html += report.table(d_rows, ["column", "PSI", "95% interval", "no-drift level", "status", "exact"])
    return html + _figures(pngs, [k for k in pngs if k == "drift_psi" or k.startswith("drift_")], used)


def _coverage_html(cov: Mapping[str, Any], pngs: Mapping[str, bytes], used: set[str]) -> str:
    if not cov.get("applicable"):
        return f'<p class="note">Not applicable: {report.escape(cov.get("why") or "no daily partitions")}.</p>'
    kv = {
        "window": f"[{cov['window'][0]}, {cov['window'][1]})",
        "days expected": cov["expected_days"],
        "days holding rows": cov["present_days"],
        "completeness": _pct(cov.get("completeness"), 1),
        "median rows per day": cov.get("median_rows"),
        "newest partition": cov.get("newest"),
        "days behind the window's last day": cov.get("staleness_days"),
        "missing days": ", ".join(cov.get("missing_days") or []) or "none",
    }
    html = report.kv_table(kv)
    if cov.get("low_days"):
        html += "<p>Days with far fewer rows than the median:</p>" + report.table(list(cov["low_days"]), ["ds", "rows"])
    return html + _figures(pngs, ["completeness"], used)


def _label_delay_html(view: Mapping[str, Any], pngs: Mapping[str, bytes], used: set[str]) -> str:
    if not view.get("labels"):
        return '<p class="note">No label of the data set\'s rows had arrived by the interval end.</p>'
    d = view.get("delay_days") or {}
    kv = {
        "labels seen": view["labels"],
        "rows": view["rows"],
        "delay p50 / p90 / p99 / max (days)": " / ".join(f"{d[k]:.1f}" for k in ("p50", "p90", "p99", "max")),
        "maturity_days": view["maturity_days"],
        "est. share of labels arriving within maturity_days": _pct(view.get("within_maturity"), 1),
        "est. share of the rows' labels arrived at the interval end": _pct(view.get("matured_share"), 1),
    }
    note = (
        "<p>Delay: label arrival minus the row's time. The shares are estimated from the delays seen, "
        "corrected for the labels of recent rows that cannot have arrived yet (right truncation); the rest "
        "of the rows' positives are counted as negatives in training.</p>"
    )
    return report.kv_table(kv) + note + _figures(pngs, ["label_delay"], used)


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
        {
            "check": c["name"],
            "result": report.badge(None, "n/a") if c.get("applicable") is False else report.badge(c["passed"]),
            "detail": c["detail"],
        }
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

    if verdict.get("coverage") is not None:
        secs.append(("Completeness and freshness", _coverage_html(verdict["coverage"], pngs, used)))

    if prof.get("label_delay") is not None:
        secs.append(("Label delay", _label_delay_html(prof["label_delay"], pngs, used)))

    if drift_result is not None:
        secs.append(
            ("Drift against the champion's training data", _drift_html(drift_result, pngs, used, max_drift_psi))
        )

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
