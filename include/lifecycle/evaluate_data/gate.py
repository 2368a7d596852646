"""The data quality gate: is the data fit for training? Every check is evaluated."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from include.lifecycle.evaluate_data.columns import _clean
from include.lifecycle.evaluate_data.stability import drifted
from include.lifecycle.spec import QualitySpec


class DataQualityError(Exception):
    """Raised by the gate; message lists every failed check."""


def _check(name: str, passed: bool, detail: str, value: Any = None, limit: Any = None) -> dict[str, Any]:
    return {"name": name, "passed": bool(passed), "detail": detail, "value": _clean(value), "limit": _clean(limit)}


def _not_applicable(name: str, why: str, limit: Any) -> dict[str, Any]:
    return {**_check(name, True, f"not applicable: {why}", None, limit), "applicable": False}


def _listed(days: list[str], limit: int = 6) -> str:
    more = f" and {len(days) - limit} more" if len(days) > limit else ""
    return ", ".join(days[:limit]) + more


def _coverage_checks(cov: Mapping[str, Any], quality: QualitySpec) -> list[dict[str, Any]]:
    """``completeness`` (days present / days expected) and ``freshness`` (the newest partition's lag)."""
    if not cov.get("applicable"):
        why = cov.get("why") or "no daily partitions"
        return [
            _not_applicable("completeness", why, quality.min_completeness),
            _not_applicable("freshness", why, quality.max_staleness_days),
        ]
    share = cov.get("completeness") or 0.0
    detail = (
        f"{cov['present_days']} of {cov['expected_days']} days of [{cov['window'][0]}, {cov['window'][1]}) "
        f"hold rows ({share:.0%}; minimum {quality.min_completeness:.0%})"
    )
    if cov.get("missing_days"):
        detail += f"; missing: {_listed(cov['missing_days'])}"
    if cov.get("low_days"):
        low = [f"{d['ds']} ({d['rows']:,} rows)" for d in cov["low_days"]]
        detail += f"; far fewer rows than the median day ({cov['median_rows']:,.0f}): {_listed(low)}"
    checks = [_check("completeness", share >= quality.min_completeness, detail, share, quality.min_completeness)]
    stale = cov.get("staleness_days")
    if stale is None:
        checks.append(
            _check("freshness", False, "no partition of the window holds rows", None, quality.max_staleness_days)
        )
    else:
        when = (
            "the window's last day" if stale == 0 else f"{stale} day(s) before the window's last day {cov['last_day']}"
        )
        detail = f"newest partition ds={cov['newest']}: {when} (maximum {quality.max_staleness_days} days)"
        checks.append(
            _check("freshness", stale <= quality.max_staleness_days, detail, stale, quality.max_staleness_days)
        )
    return checks


def _drift_check(drift_result: Mapping[str, Any] | None, quality: QualitySpec) -> dict[str, Any]:
    limit = quality.max_drift_psi
    if not drift_result or not drift_result.get("reference"):
        why = (drift_result or {}).get("why") or "no reference: first model"
        return _check("drift", True, why, None, limit)
    if not drift_result.get("current_rows"):
        why = drift_result.get("why") or "no rows to compare with the reference"
        return _check("drift", True, why, None, limit)
    mp = float(drift_result.get("max_psi") or 0.0)
    over = drifted(drift_result, limit)
    detail = f"max PSI {mp:.3f} (maximum {limit:g})"
    if over:
        detail += "; drifted: " + ", ".join(f"{c} {v:.3f}" for c, v in sorted(over.items(), key=lambda kv: -kv[1]))
    elif drift_result.get("max_column"):
        detail += f" on {drift_result['max_column']}"
        noise = ((drift_result.get("details") or {}).get(drift_result["max_column"]) or {}).get("noise")
        if mp > limit and noise is not None:
            detail += f", within its no-drift level {noise:.3f} at these sample sizes"
    return _check("drift", not over, detail, mp, limit)


def quality_gate(
    prof: Mapping[str, Any],
    *,
    quality: QualitySpec,
    expected_columns: list[str],
    drift_result: Mapping[str, Any] | None,
    quarantine_share: float,
    max_quarantine_share: float,
    ignore_columns: Iterable[str] = (),
    coverage: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Decide whether the data is fit for training; every check is evaluated (no short-circuit).

    Checks (by name): ``min_rows``, ``target_present``, ``min_positives`` (binary targets only),
    ``max_missing_share``, ``schema_columns`` (expected columns missing, or columns that are not
    expected; the target column and ``ignore_columns`` are never "unexpected"),
    ``quarantine_share``, ``drift`` (a column whose PSI against the reference is above
    ``quality.max_drift_psi`` and above its no-drift level; passes, saying why, without a
    reference) and, given the window's ``coverage`` (:func:`.coverage.coverage`),
    ``completeness`` and ``freshness`` (``"applicable": False`` for a single file). Returns
    ``{"passed", "verdict": "fit"|"unfit", "checks", "failed": [names]}`` and the ``coverage``
    when given.
    """
    overall = prof.get("overall") or {}
    tgt = prof.get("target") or {}
    rows = int(overall.get("rows") or 0)
    checks: list[dict[str, Any]] = []

    checks.append(
        _check(
            "min_rows",
            rows >= quality.min_rows,
            f"{rows:,} rows (minimum {quality.min_rows:,})",
            rows,
            quality.min_rows,
        )
    )

    t_name = tgt.get("column")
    if not t_name:
        checks.append(_check("target_present", False, "no target column configured"))
    elif not tgt.get("present"):
        checks.append(_check("target_present", False, f"target column {t_name!r} is not in the data"))
    else:
        labelled = int(tgt.get("count") or 0)
        ok = labelled > 0 or rows == 0
        share = tgt.get("missing_share")
        detail = f"target {t_name!r}: {labelled:,} labelled rows" + (
            f", {share:.1%} missing" if share is not None else ""
        )
        checks.append(_check("target_present", ok, detail if ok else f"target {t_name!r} is missing in every row"))

    if tgt.get("type") == "binary":
        pos = int(tgt.get("positives") or 0)
        rate = tgt.get("base_rate")
        rate_txt = f", base rate {rate:.4%}" if rate is not None else ""
        checks.append(
            _check(
                "min_positives",
                pos >= quality.min_positives,
                f"{pos:,} positives (minimum {quality.min_positives:,}){rate_txt}",
                pos,
                quality.min_positives,
            )
        )

    missing = prof.get("missingness") or {}
    too_missing = {c: s for c, s in missing.items() if s is not None and s > quality.max_missing_share}
    if too_missing:
        worst = ", ".join(f"{c} {s:.1%}" for c, s in sorted(too_missing.items(), key=lambda kv: -kv[1]))
        detail = f"columns above {quality.max_missing_share:.1%} missing: {worst}"
    else:
        top = max((s for s in missing.values() if s is not None), default=0.0)
        detail = f"highest missing share {top:.1%} (maximum {quality.max_missing_share:.1%})"
    top_share = max((s for s in missing.values() if s is not None), default=0.0)
    checks.append(_check("max_missing_share", not too_missing, detail, top_share, quality.max_missing_share))

    actual = list((prof.get("dtypes") or {}).keys())
    allowed_extra = set(ignore_columns) | ({t_name} if t_name else set())
    absent = [c for c in expected_columns if c not in actual]
    unexpected = [c for c in actual if c not in expected_columns and c not in allowed_extra]
    parts = []
    if absent:
        parts.append(f"missing columns: {', '.join(absent)}")
    if unexpected:
        parts.append(f"unexpected columns: {', '.join(unexpected)}")
    checks.append(
        _check(
            "schema_columns",
            not parts,
            "; ".join(parts) if parts else f"all {len(expected_columns)} expected columns present",
        )
    )

    q = float(quarantine_share or 0.0)
    checks.append(
        _check(
            "quarantine_share",
            q <= max_quarantine_share,
            f"{q:.2%} of rows quarantined (maximum {max_quarantine_share:.2%})",
            q,
            max_quarantine_share,
        )
    )

    checks.append(_drift_check(drift_result, quality))
    if coverage is not None:
        checks.extend(_coverage_checks(coverage, quality))

    failed = [c["name"] for c in checks if not c["passed"]]
    out = {"passed": not failed, "verdict": "unfit" if failed else "fit", "checks": checks, "failed": failed}
    if coverage is not None:
        out["coverage"] = _clean(coverage)
    return out


def raise_if_unfit(verdict: Mapping[str, Any]) -> None:
    """Raise :class:`DataQualityError` naming each failed check and its numbers; no-op when fit."""
    failed = [c for c in verdict.get("checks") or [] if not c.get("passed")]
    if verdict.get("passed") and not failed:
        return
    total = len(verdict.get("checks") or [])
    lines = [f"data is unfit for training: {len(failed)} of {total} quality checks failed"]
    lines += [f"  - {c['name']}: {c['detail']}" for c in failed]
    raise DataQualityError("\n".join(lines))
