"""Parity of the Spark collection (include/lifecycle/collect_spark.py, PySpark in local mode, what
the Glue ``glueetl`` job runs) with collect.py's ``collect_and_label`` (pandas/Arrow, the local
backend): from the same landing files and the same curated history,

* the same curated partitions, byte for byte (so the same rows in order, Arrow types), and the
  same manifests;
* the same partition quarantine: every row's rule, column, source and text columns; ``_reason``
  for duplicate keys and CSV rows that could not be parsed, not for a broken rule, whose value
  the Spark path does not show (documented);
* the same cross-partition and label quarantine;
* the same data set, byte for byte;
* the same summary (counts, rules, files, warnings; all but ``engine`` and the paths of the two
  artifact roots).

The inputs: test_curate_engines' hand-made partitions (a row for every rule and for their
precedence, duplicates within a file, across the files of a partition, across days and against
the curated history, a label feed with late, early, duplicate and broken labels) as Parquet and as
CSV, with what only reading finds: values that are not UTF-8 in a Parquet file (rule
``encoding``, before a later column's rules and after an earlier one's), CSV rows of the wrong width
(``malformed_row``), a file of zero rows and hidden entries; and a few days of the demo generator's
card data with its defects. A second Spark run re-uses every partition (its own, and collect.py's)
and gives the same data set.

One Spark session (local[1], no UI) serves the module; without Java 8/11/17 the tests fail with
the install hint (tests/unit/engines.py), they never skip.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import pytest

from include.lifecycle import synth
from include.lifecycle.collect_spark import collect_and_label_spark
from include.lifecycle.layout import RunLayout
from include.lifecycle.spec import Spec
from include.lifecycle.store import Store
from tests.unit import engines
from tests.unit.test_curate_engines import (
    AS_OF,
    HISTORY_AS_OF,
    KEY,
    OK,
    _collect,
    _landing,
    _rows,
    _spec,
    _synth_spec,
    _typed_frame,
)

RUN = "runs/r2"


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    conf = {
        "spark.sql.shuffle.partitions": "1",
        # tiny inputs: compiling whole-stage code and re-planning cost more than they save
        "spark.sql.codegen.wholeStage": "false",
        "spark.sql.adaptive.enabled": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    with engines.spark_session(tmp_path_factory.mktemp("spark"), "collect-spark-parity", conf) as session:
        yield session


def _spark_run(
    spark: Any, spec: Spec, art: Path, source: Path, labels: Path, as_of: dt.datetime, run: str, log: Any = None
) -> dict:
    return collect_and_label_spark(
        spec,
        problem=Store.from_uri(str(art)),
        run_dir=run,
        as_of=as_of,
        lookback_days=spec.data.lookback_days,
        pii_key=KEY,
        source_uri=str(source),
        labels_uri=str(labels),
        log=log or (lambda _: None),
        spark=spark,
    )


# what only reading finds --------------------------------------------------------------------------
def _reading_defects(src: Path, fmt: str) -> None:
    """Hidden entries, a file of zero rows, and (Parquet) values that are not UTF-8 or (CSV) rows of
    the wrong width, in partitions of the window."""
    (src / "_SUCCESS").write_text("")
    (src / "ds=2024-03-03" / ".part-0.crc").write_text("")
    if fmt == "parquet":
        _typed_frame([]).to_parquet(src / "ds=2024-03-04" / "part-9.parquet", index=False)
        frame = _typed_frame(
            [
                ("e1", "5T02", "x", 10.0, *OK),  # card is not UTF-8: encoding
                ("e2", None, "x", 10.0, *OK),  # not_null ts comes first (ts is declared before card)
                ("e3", "5T03", "c9", -1.0, *OK),  # valid card, min:0.01 on amount
                ("e4", "5T04", "x", 5000.0, *OK),  # encoding on card before max on amount (card comes first)
                ("e5", "5T04", "c9", 10.0, *OK),
            ]
        )
        frame["card"] = [b"\xffc1", b"\xfe", b"c9", b"\xff\xfe", b"c9"]  # a binary column read as text
        frame.to_parquet(src / "ds=2024-03-05" / "part-1.parquet", index=False)
        return
    (src / "ds=2024-03-04" / "part-9.csv").write_text("tx,ts,card,amount,kind,qty\n")
    (src / "ds=2024-03-05" / "part-1.csv").write_text(
        "tx,ts,card,amount,kind,qty\n"
        "w1,2024-03-05T02:00:00Z,c1,10,pos,1\n"
        "w2,2024-03-05T02:00:00Z,c1,10,pos,1,extra\n"  # one field too many: malformed_row
        "w3,2024-03-05T02:00:00Z\n"  # too few: malformed_row
        "w4,2024-03-05T03:00:00Z,c1,-3,pos,1\n"
    )


def _landing_case(root: Path, kind: str) -> tuple[Spec, Path, Path, dt.datetime]:
    if kind in ("parquet", "csv"):
        src, lab = _landing(root / "landing", kind)
        _reading_defects(src, kind)
        return _spec(kind), src, lab, HISTORY_AS_OF
    end = AS_OF.date()
    synth.generate(root / "landing", end=end, days=5, tx_per_day=400, seed=3, defect_rate=0.03, n_cards=200)
    history_as_of = dt.datetime.combine(end - dt.timedelta(days=3), dt.time(), dt.UTC)
    return _synth_spec(), root / "landing" / "transactions", root / "landing" / "chargebacks", history_as_of


# comparing ------------------------------------------------------------------------------------------
def _table(art: Path, rel: str) -> tuple[list[tuple[str, str]], pd.DataFrame]:
    table = pq.read_table(art / rel)
    return [(f.name, str(f.type)) for f in table.schema], table.to_pandas()


def _same_file(art_p: Path, art_s: Path, rel: str, *, ordered: bool = True) -> pd.DataFrame:
    (types_p, df_p), (types_s, df_s) = _table(art_p, rel), _table(art_s, rel)
    assert types_s == types_p, rel
    assert _rows(df_s, list(df_p.columns), ordered=ordered) == _rows(df_p, list(df_p.columns), ordered=ordered), rel
    return df_p


def _same_quarantine(art_p: Path, art_s: Path, rel: str, spec: Spec) -> None:
    assert (art_s / rel).exists() == (art_p / rel).exists(), rel
    if not (art_p / rel).exists():
        return
    qp, qs = pq.read_table(art_p / rel).to_pandas(), pq.read_table(art_s / rel).to_pandas()
    assert sorted(qs.columns) == sorted(qp.columns), rel
    shown = [*spec.schema_.names, "_rule", "_column", "_source"]
    assert _rows(qs, shown) == _rows(qp, shown), rel
    # the reasons of duplicate keys and of rows that could not be parsed are collect.py's; of a row
    # that breaks a rule they name the column and the rule (the Spark path does not show values)
    exact = [*shown, "_reason"]
    for q in (qs, qp):
        q["_exact"] = q["_rule"].isin(["malformed_row", "duplicate_key"])
    assert _rows(qs[qs["_exact"]], exact) == _rows(qp[qp["_exact"]], exact)
    other = qs[~qs["_exact"]]
    assert all(
        r == f"{c} breaks rule {u}" for r, c, u in zip(other["_reason"], other["_column"], other["_rule"], strict=True)
    )


def _same_summary(sp: dict, ss: dict, art_p: Path, art_s: Path) -> None:
    def plain(s: dict) -> Any:
        return json.loads(json.dumps({k: v for k, v in s.items() if k != "engine"}, default=str))

    assert ss["engine"]["name"] == "spark"
    assert plain(ss) == json.loads(json.dumps(plain(sp)).replace(str(art_p), str(art_s)))


def _same_outputs(spec: Spec, sp: dict, ss: dict, art_p: Path, art_s: Path, run: str = RUN) -> None:
    _same_summary(sp, ss, art_p, art_s)
    for part in sp["partitions"]:
        ds = part["ds"]
        _same_file(art_p, art_s, f"curated/ds={ds}/part-0.parquet")
        # more than the same rows: the same bytes, so either engine's partition is the other's
        assert (art_s / f"curated/ds={ds}/part-0.parquet").read_bytes() == (
            art_p / f"curated/ds={ds}/part-0.parquet"
        ).read_bytes(), ds
        manifest = f"curated/ds={ds}/_manifest.json"
        assert json.loads((art_s / manifest).read_text()) == json.loads((art_p / manifest).read_text())
        _same_quarantine(art_p, art_s, f"quarantine/ds={ds}/part-0.parquet", spec)
    for name in ("cross_partition", "labels"):
        rel = RunLayout.quarantine_in(run, name)
        assert (art_s / rel).exists() == (art_p / rel).exists()
        if (art_p / rel).exists():
            _same_file(art_p, art_s, rel, ordered=name == "cross_partition")
    _same_file(art_p, art_s, RunLayout.dataset_in(run))
    assert (art_s / RunLayout.dataset_in(run)).read_bytes() == (art_p / RunLayout.dataset_in(run)).read_bytes()


@pytest.mark.parametrize("kind", ["parquet", "csv", "synth"])
def test_spark_collects_what_collect_py_collects(kind: str, spark: Any, tmp_path: Path) -> None:
    spec, src, lab, history_as_of = _landing_case(tmp_path, kind)
    art_p, art_s = tmp_path / "pandas", tmp_path / "spark"
    _collect(spec, art_p, src, lab, history_as_of, "runs/r1")  # the curated history of both
    shutil.copytree(art_p, art_s)
    sp = _collect(spec, art_p, src, lab, AS_OF, RUN)
    lines: list[str] = []
    ss = _spark_run(spark, spec, art_s, src, lab, AS_OF, RUN, lines.append)
    _same_outputs(spec, sp, ss, art_p, art_s)
    assert ss["engine"]["partitions_curated"] == len(sp["partitions"]) and ss["engine"]["partitions_reused"] == 0
    assert any(line.startswith("spark: read ") for line in lines)
    assert any(line.startswith("spark: wrote ") for line in lines)
    rules = sp["by_rule"]
    if kind == "parquet":  # the inputs hold what they are meant to hold
        assert rules["encoding"] == 2 and rules["duplicate_key"] >= 5 and sp["cross_partition"]["duplicate_key"] > 0
        assert any("0 rows" in w for w in sp["warnings"])
        assert {f["outcome"] for f in sp["files"]} == {"read", "empty", "ignored"}
    if kind == "csv":
        assert rules["malformed_row"] == 2 and rules["dtype:timestamp"] == 1
    if kind == "synth":
        assert sp["positives"] > 0 and sp["label_rows_used"] > 0
        _same_entity_features(spec, ss, art_s)
    else:  # these specs declare no per-entity group: nothing is computed, no file
        assert ss["engine"]["entity_features"] is None
        assert not (art_s / RunLayout.entity_features_beside(RunLayout.dataset_in(RUN))).exists()


def _same_entity_features(spec: Spec, ss: dict, art_s: Path) -> None:
    """The Spark run computed every per-entity group of the spec (history_ibis) for the data set's
    rows, in its order, as features.py computes them from the data set (floats within 1e-9
    relative); feature engineering takes them from the file and gets the same features."""
    import numpy as np

    from include.lifecycle.features import PER_ENTITY_KINDS, EntityFeatures, FeaturePipeline

    dataset = RunLayout.dataset_in(RUN)
    rel = RunLayout.entity_features_beside(dataset)
    info = ss["engine"]["entity_features"]
    assert info["rel"] == rel and info["groups"] == ["card_velocity", "card_history"] and info["skipped"] == {}
    df = pd.read_parquet(art_s / dataset)
    pre = EntityFeatures.from_arrow(pq.read_table(art_s / rel))
    assert pre.engine.startswith("spark ") and len(pre.frame) == len(df) > 500
    pipeline = FeaturePipeline.from_spec(spec, [g.name for g in spec.features.groups])
    groups = [g for g in pipeline.groups if g.kind in PER_ENTITY_KINDS]
    assert set(pre.taken(df, pipeline.groups, pipeline.time_column, pipeline.entity_column)) == {g.name for g in groups}
    own, own_cols = pipeline.engineer(df)
    names = [n for g in groups for n in pre.columns_for(df, g, pipeline.time_column, pipeline.entity_column)]
    assert names == list(pre.frame.columns) == info["columns"]
    np.testing.assert_allclose(pre.frame[names].to_numpy(), own[names].to_numpy(), rtol=1e-9, atol=0)
    assert (own["hist_n_prior"] > 0).mean() > 0.5 and own["vel_cnt_24h"].max() > 1  # histories, not first rows
    taken, taken_cols = pipeline.engineer(df, precomputed=pre)
    assert list(taken.columns) == list(own.columns) and taken_cols.to_dict() == own_cols.to_dict()
    np.testing.assert_allclose(taken[names].to_numpy(), own[names].to_numpy(), rtol=1e-9, atol=0)


def test_a_second_spark_run_re_uses_every_partition(spark: Any, tmp_path: Path) -> None:
    """Partitions curated by Spark, or by collect.py, are re-used by a Spark run from the same input:
    nothing is read or written again, and the data set, cross-partition duplicates included, is the same."""
    spec, src, lab, history_as_of = _landing_case(tmp_path, "parquet")
    art_p, art_s = tmp_path / "pandas", tmp_path / "spark"
    _collect(spec, art_p, src, lab, history_as_of, "runs/r1")
    shutil.copytree(art_p, art_s)
    sp = _collect(spec, art_p, src, lab, AS_OF, RUN)
    _spark_run(spark, spec, art_s, src, lab, AS_OF, RUN)
    manifests = {p: p.read_bytes() for p in sorted(art_s.glob("curated/*/_manifest.json"))}
    again = _spark_run(spark, spec, art_s, src, lab, AS_OF, "runs/r3")
    on_pandas = _spark_run(spark, spec, art_p, src, lab, AS_OF, "runs/r3")
    pandas_again = _collect(spec, art_p, src, lab, AS_OF, "runs/r4")
    assert {p: p.read_bytes() for p in sorted(art_s.glob("curated/*/_manifest.json"))} == manifests
    for ss, art in ((again, art_s), (on_pandas, art_p)):
        assert ss["engine"]["partitions_reused"] == len(sp["partitions"]) and ss["engine"]["partitions_curated"] == 0
        assert {f["outcome"] for f in ss["files"] if f["source"] == "data" and "rows" in f} == {"re-used"}
        for k in ("rows_in", "rows_curated", "rows_quarantined", "by_rule", "dataset_rows", "cross_partition"):
            expected = pandas_again[k]
            if k == "cross_partition":
                expected = {**expected, "quarantine_rel": expected["quarantine_rel"].replace("r4", "r3")}
            assert ss[k] == expected, k
        (_, first), (_, second) = _table(art_p, RunLayout.dataset_in(RUN)), _table(art, RunLayout.dataset_in("runs/r3"))
        columns = list(first.columns)
        assert _rows(second, columns, ordered=True) == _rows(first, columns, ordered=True)
        cross_p = pd.read_parquet(art_p / RunLayout.quarantine_in("runs/r4", "cross_partition"))
        cross_s = pd.read_parquet(art / RunLayout.quarantine_in("runs/r3", "cross_partition"))
        assert _rows(cross_s, list(cross_p.columns), ordered=True) == _rows(
            cross_p, list(cross_p.columns), ordered=True
        )
    assert sp["dataset_rows"] == again["dataset_rows"] == on_pandas["dataset_rows"]


def test_a_per_entity_group_features_py_would_refuse_is_left_to_feature_engineering(spark: Any, tmp_path: Path) -> None:
    """Of the spec's per-entity groups, the Spark job computes those it can (a history group here,
    equal to features.py's) and names the one features.py refuses (a velocity group summing a
    category column) with features.py's reason; feature engineering, given the file, computes that
    one itself and fails with the same reason."""
    import numpy as np

    from include.lifecycle.features import EntityFeatures, FeaturePipeline, per_entity_names
    from include.lifecycle.spec import FeatureGroupSpec, FeaturesSpec

    spec, src, lab, _ = _landing_case(tmp_path, "parquet")
    history = FeatureGroupSpec(name="card_history", kind="history", columns=["amount", "kind", "qty"])
    kinds = FeatureGroupSpec(name="card_kinds", kind="velocity", columns=["kind"], params={"windows": ["1h"]})
    groups = [*spec.features.groups, kinds, history]
    spec = spec.model_copy(update={"features": FeaturesSpec(initial=["raw"], groups=groups)})
    ss = _spark_run(spark, spec, tmp_path / "spark", src, lab, AS_OF, RUN)
    info = ss["engine"]["entity_features"]
    assert info["groups"] == ["card_history"] and list(info["skipped"]) == ["card_kinds"]
    assert "the summed column 'kind' is not numeric" in info["skipped"]["card_kinds"]
    df = pd.read_parquet(tmp_path / "spark" / RunLayout.dataset_in(RUN))
    pre = EntityFeatures.from_arrow(pq.read_table(tmp_path / "spark" / info["rel"]))
    pipeline = FeaturePipeline.from_spec(spec, ["card_history"])
    own, _ = pipeline.engineer(df)
    names = per_entity_names(df, history)
    assert names == info["columns"] == ["hist_n_prior", "hist_amount_ratio", "hist_new_kind", "hist_qty_ratio"]
    assert len(df) > 10 and (own["hist_n_prior"] > 0).any()
    np.testing.assert_allclose(pre.frame[names].to_numpy(), own[names].to_numpy(), rtol=1e-9, atol=0)
    with pytest.raises(ValueError, match=info["skipped"]["card_kinds"].split(": ", 1)[1]):
        FeaturePipeline.from_spec(spec, ["card_kinds", "card_history"]).engineer(df, precomputed=pre)


@pytest.mark.parametrize("defect", ["not_parquet", "missing_column"])
def test_a_bad_file_stops_the_spark_run_as_it_stops_collect_py(defect: str, spark: Any, tmp_path: Path) -> None:
    """A file that cannot be read (not Parquet) or lacks a declared column stops both engines with the
    same error type and message, naming the file (and the column); the Spark run writes no partition
    (documented: collect.py has written the days before it)."""
    spec, src, lab, _ = _landing_case(tmp_path, "parquet")
    bad = src / "ds=2024-03-04" / "part-7.parquet"
    if defect == "not_parquet":
        bad.write_bytes(b"this is not a parquet file\n" * 20)
    else:
        pd.DataFrame({"tx": ["z1"], "amount": [1.0]}).to_parquet(bad, index=False)
    art_p, art_s = tmp_path / "pandas", tmp_path / "spark"
    errors = {}
    for engine, art in (("pandas", art_p), ("spark", art_s)):
        with pytest.raises(ValueError) as caught:  # InputFileError and SchemaError are ValueErrors
            if engine == "pandas":
                _collect(spec, art, src, lab, AS_OF, RUN)
            else:
                _spark_run(spark, spec, art, src, lab, AS_OF, RUN)
        errors[engine] = caught.value
    assert type(errors["spark"]) is type(errors["pandas"])
    assert str(errors["spark"]) == str(errors["pandas"])
    assert "part-7.parquet" in str(errors["spark"])
    if defect == "missing_column":
        assert "missing" in str(errors["spark"]) and "'card'" in str(errors["spark"])
    assert not list(art_s.glob("curated/*/part-0.parquet"))
    assert not (art_s / RunLayout.dataset_in(RUN)).exists()
