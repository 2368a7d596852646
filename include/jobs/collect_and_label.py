"""Entry point of the collect-and-label ETL: the same file runs in-process (local backend)
and as an AWS Glue Python shell job (aws backend), where Glue passes ``--name value`` args.

    python -m include.jobs.collect_and_label --spec include/problems/card_fraud.yaml \
        --artifact-root file:///.../artifacts/card_fraud --run-dir runs/<run> \
        --as-of 2026-11-01T00:00:00+00:00 --lookback-days 28 --pii-key-env ML_PII_HASH_KEY
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from include.lifecycle.collect import collect_and_label
from include.lifecycle.spec import load_spec, parse_spec, resolve_source
from include.lifecycle.store import Store, to_json


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", required=True, help="path of the problem YAML, or the spec as JSON text")
    p.add_argument("--artifact-root", required=True, help="URI of <root>/<problem>")
    p.add_argument("--run-dir", required=True, help="run-scoped folder relative to the problem root")
    p.add_argument("--as-of", required=True, help="data interval end (ISO 8601)")
    p.add_argument("--lookback-days", type=int, required=True)
    p.add_argument("--pii-key-env", default="ML_PII_HASH_KEY", help="environment variable holding the PII key")
    p.add_argument("--source", default=None, help="override data.source")
    p.add_argument("--labels", default=None, help="override data.labels.source")
    args, _unknown = p.parse_known_args(argv)  # Glue adds its own --JOB_NAME etc.
    return args


def main(argv: Sequence[str] | None = None, *, pii_key: bytes | None = None, log: Any = print) -> dict[str, Any]:
    args = parse_args(argv)
    spec = (
        parse_spec(json.loads(args.spec), "<spec json>") if args.spec.lstrip().startswith("{") else load_spec(args.spec)
    )
    key = pii_key if pii_key is not None else os.environ.get(args.pii_key_env, "").encode()
    source = resolve_source(args.source or spec.data.source)
    labels = resolve_source(args.labels or spec.data.labels.source) if spec.data.labels else None
    summary = collect_and_label(
        spec,
        problem=Store.from_uri(args.artifact_root),
        run_dir=args.run_dir,
        as_of=dt.datetime.fromisoformat(args.as_of),
        lookback_days=args.lookback_days,
        pii_key=key,
        source_uri=source,
        labels_uri=labels,
        log=log,
    )
    Store.from_uri(args.artifact_root).write_json(f"{args.run_dir}/collect_summary.json", summary)
    return summary


if __name__ == "__main__":  # pragma: no cover - exercised as a Glue job / CLI
    print(to_json(main(sys.argv[1:])))
