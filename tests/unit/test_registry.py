"""Unit tests of include/lifecycle/registry.py on a real MLflow store (SQLite in a temporary
artifact root): versions of a registered model whose files are artifacts of an MLflow run, a
sha256 manifest verified on load, the alias ``champion`` moved by compare-and-set under a lock
(threads, processes, and an S3 lock object on an S3 emulator), a kill during registration or
promotion, a damaged champion, rollback and the approval tags."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from include.lifecycle import mlflow_env, tracking
from include.lifecycle.registry import (
    ALIAS,
    ChampionChanged,
    ChecksumError,
    ModelRegistry,
    RegistryLockTimeout,
    approval_tags,
)
from include.lifecycle.store import Store, sha256_bytes
from tests.registry_store import mlflow_db_in, version_file

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROBLEM = "card_fraud"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.delenv(mlflow_env.ENV, raising=False)
    mlflow_db_in(tmp_path)  # the MLflow store of the artifact root tmp_path
    return Store.from_uri((tmp_path / PROBLEM).as_uri())


@pytest.fixture
def registry(store: Store) -> ModelRegistry:
    return ModelRegistry(store)


def _files(tag: str) -> dict[str, bytes]:
    return {
        "model.joblib": f"model bytes {tag}".encode(),
        "features.json": json.dumps({"tag": tag}).encode(),
        "threshold.json": b'{"threshold": 0.5}',
    }


_file = version_file


# --------------------------------------------------------------------------------------
# versions
# --------------------------------------------------------------------------------------
def test_versions_are_numbered_from_one_in_the_mlflow_registry(registry: ModelRegistry, tmp_path: Path) -> None:
    assert registry.name == PROBLEM and registry.versions() == [] and registry.champion() is None
    assert [registry.register(_files(t), {"tag": t}) for t in ("a", "b", "c")] == [1, 2, 3]
    assert registry.versions() == [1, 2, 3]
    for n, tag in zip((1, 2, 3), ("a", "b", "c"), strict=True):
        assert registry.load(n)["model.joblib"] == f"model bytes {tag}".encode()
        meta = registry.metadata(n)
        assert meta["tag"] == tag and meta["version"] == n and "registered_at" in meta
    # the store is MLflow's: SQLite inside the artifact root, a registered model named after the problem
    assert registry.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow_env.client(str(tmp_path))
    assert [int(mv.version) for mv in client.search_model_versions(f"name = '{PROBLEM}'")] == [3, 2, 1]


def test_a_version_is_the_artifacts_of_an_mlflow_run_with_its_manifest_and_lineage_as_tags(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    lineage = {"run_id": "manual__2026-01-01T00:00:00+00:00", "round": 2, "window": {"start": "2026-01-01"}}
    files = {**_files("a"), "lineage.json": json.dumps(lineage).encode()}
    claim = {"run_id": lineage["run_id"], "round": 2}
    n = registry.register(files, {"metric": "auprc", "test_score": 0.61}, claim=claim)
    client = registry.client
    mv = client.get_model_version(PROBLEM, str(n))
    run = client.get_run(mv.run_id)
    # the files are artifacts of the DAG run's MLflow run, the one the tracking step logs into
    assert mv.source == f"{run.info.artifact_uri}/registry/round_2"
    assert run.info.artifact_uri.startswith(f"{tmp_path.as_uri()}/mlflow-artifacts/{PROBLEM}/")
    experiment = client.get_experiment(run.info.experiment_id)
    found = tracking.find_run(client, experiment.experiment_id, PROBLEM, lineage["run_id"])
    assert experiment.name == PROBLEM and found.info.run_id == mv.run_id
    assert sorted(a.path for a in client.list_artifacts(mv.run_id, "registry/round_2")) == sorted(
        f"registry/round_2/{name}" for name in files
    )
    # the manifest is in the registry database, not next to the files
    manifest = registry.manifest(n)
    assert manifest == {
        "version": n,
        "files": {k: {"sha256": sha256_bytes(v), "bytes": len(v)} for k, v in files.items()},
    }
    assert json.loads(mv.tags["manifest"]) == manifest["files"]
    assert registry.lineage(n) == lineage
    assert mv.tags["lineage.round"] == "2" and json.loads(mv.tags["lineage.window"]) == lineage["window"]
    assert (mv.tags["airflow.run_id"], mv.tags["round"], mv.tags["metric"]) == (claim["run_id"], "2", "auprc")


def test_versions_are_never_overwritten(registry: ModelRegistry) -> None:
    n1 = registry.register(_files("a"), {"tag": "a"})
    folder = _file(registry, n1, "")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    n2 = registry.register(_files("a"), {"tag": "a"})  # identical content still gets a new number
    assert n2 == n1 + 1 and _file(registry, n2, "") != folder
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_reserved_names_are_refused(registry: ModelRegistry) -> None:
    for name in ("manifest.json", "metadata.json"):
        with pytest.raises(ValueError, match="written by the registry"):
            registry.register({name: b"{}"}, {})
    assert registry.versions() == []


def test_concurrent_registrations_get_distinct_numbers(registry: ModelRegistry) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        n = ModelRegistry(registry.store).register(_files(str(i)), {"worker": i})
        with lock:
            results.append(n)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 7))
    assert registry.versions() == list(range(1, 7))
    for n in results:  # every version holds exactly its own worker's files
        worker = registry.metadata(n)["worker"]
        assert registry.load(n)["model.joblib"] == f"model bytes {worker}".encode()


# --------------------------------------------------------------------------------------
# checksums
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["model.joblib", "features.json", "threshold.json"])
def test_tampered_file_is_refused(registry: ModelRegistry, tmp_path: Path, name: str) -> None:
    n = registry.register(_files("a"), {"tag": "a"})
    registry.load(n)  # intact: loads
    path = _file(registry, n, name)
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01  # one flipped bit
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=f"registry/{name}.*refusing to load version {n}"):
        registry.load(n)
    out = tmp_path / "materialised"
    with pytest.raises(ChecksumError):
        registry.materialise(n, out)
    assert not out.exists()  # nothing of a damaged version is written out (or unpickled)
    assert not registry.intact(n)


def test_truncated_or_missing_file_is_refused(registry: ModelRegistry) -> None:
    n = registry.register(_files("a"), {})
    _file(registry, n, "model.joblib").write_bytes(b"")
    with pytest.raises(ChecksumError):
        registry.load(n)
    _file(registry, n, "features.json").unlink()
    with pytest.raises(FileNotFoundError):
        registry.load(n)
    assert not registry.intact(n)


def test_tampering_one_version_leaves_others_loadable(registry: ModelRegistry) -> None:
    registry.register(_files("a"), {})
    registry.register(_files("b"), {})
    _file(registry, 1, "threshold.json").write_text('{"threshold": 0.0}')
    with pytest.raises(ChecksumError):
        registry.load(1)
    assert registry.load(2)["threshold.json"] == b'{"threshold": 0.5}'


def test_materialise_writes_a_verified_copy(registry: ModelRegistry, tmp_path: Path) -> None:
    files = {**_files("a"), "sub/extra.bin": bytes(range(256))}
    n = registry.register(files, {})
    out = registry.materialise(n, tmp_path / "copy")
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == set(files)
    for name, data in files.items():
        assert (out / name).read_bytes() == data


def test_a_moved_artifact_root_still_loads_from_its_own_copy(registry: ModelRegistry, tmp_path: Path) -> None:
    n = registry.register(_files("a"), {})
    moved = tmp_path.parent / f"{tmp_path.name}-moved"
    shutil.copytree(tmp_path, moved)
    _file(registry, n, "model.joblib").write_bytes(b"the original changed after the copy")
    copy = ModelRegistry(Store.from_uri((moved / PROBLEM).as_uri()))
    assert copy.load(n)["model.joblib"] == b"model bytes a"  # read below its own root, checked


# --------------------------------------------------------------------------------------
# champion
# --------------------------------------------------------------------------------------
def test_promote_moves_the_alias_and_records_each_deployment(registry: ModelRegistry) -> None:
    v1 = registry.register(_files("a"), {})
    v2 = registry.register(_files("b"), {})
    assert registry.champion() is None and registry.champion_version() is None
    r1 = registry.promote(v1, run_id="manual__2026-01-01T00:00:00+00:00", expected_champion=None, details={"x": 1})
    assert r1["version"] == v1 and r1["previous"] is None and r1["x"] == 1 and r1["model_uri"] == "models:/card_fraud/1"
    assert registry.champion() == r1
    r2 = registry.promote(v2, run_id="scheduled__2026-01-02", expected_champion=v1)
    assert (r2["version"], r2["previous"]) == (v2, v1)
    assert registry.champion() == r2 and registry.champion_version() == v2
    assert int(registry.client.get_model_version_by_alias(PROBLEM, ALIAS).version) == v2
    assert registry.deployments() == [r1, r2]
    assert [r["version"] for r in registry.chain()] == [v2, v1]


def test_stale_champion_is_detected(registry: ModelRegistry) -> None:
    v1 = registry.register(_files("a"), {})
    v2 = registry.register(_files("b"), {})
    v3 = registry.register(_files("c"), {})
    registry.promote(v1, run_id="run-1", expected_champion=None)
    # Two runs both compared against v1; the first promotes, the second must re-evaluate.
    registry.promote(v2, run_id="run-2", expected_champion=v1)
    with pytest.raises(ChampionChanged, match=f"champion is now version {v2}, not {v1}"):
        registry.promote(v3, run_id="run-3", expected_champion=v1)
    assert registry.champion()["version"] == v2
    # A run that believed there was no champion is stale as well.
    with pytest.raises(ChampionChanged):
        registry.promote(v3, run_id="run-4", expected_champion=None)
    assert len(registry.deployments()) == 2


def test_only_registered_versions_can_be_promoted(registry: ModelRegistry) -> None:
    with pytest.raises(ValueError, match="not a complete registered version"):
        registry.promote(1, run_id="r", expected_champion=None)
    # a version made in the MLflow UI (no manifest): not one of this registry's
    registry.register(_files("a"), {})
    registry.client.create_model_version(PROBLEM, "file:///elsewhere", tags={})
    with pytest.raises(ValueError, match="version 2 is not a complete registered version"):
        registry.promote(2, run_id="r", expected_champion=None)
    assert registry.versions() == [1] and registry.champion() is None


def test_concurrent_promotes_from_threads_let_exactly_one_win(registry: ModelRegistry) -> None:
    versions = [registry.register(_files(str(i)), {}) for i in range(6)]
    barrier = threading.Barrier(len(versions))
    won: list[int] = []
    lost: list[int] = []

    def work(v: int) -> None:
        mine = ModelRegistry(registry.store)  # a client of its own, as another task would have
        barrier.wait()
        try:
            mine.promote(v, run_id=f"run-{v}", expected_champion=None)
            won.append(v)
        except ChampionChanged:
            lost.append(v)

    threads = [threading.Thread(target=work, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and sorted(won + lost) == versions
    assert registry.champion()["version"] == won[0]
    assert [d["version"] for d in registry.deployments()] == won


_PROMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    from include.lifecycle.registry import ChampionChanged, ModelRegistry
    from include.lifecycle.store import Store

    root, version, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    reg = ModelRegistry(Store.from_uri("file://" + root))
    done = 0
    while done < rounds:
        # Compare-then-promote, as a run does: read the champion, then promote against it.
        current = reg.champion()
        try:
            reg.promote(version, run_id=f"proc-{version}-{done}", expected_champion=current and current["version"])
            done += 1
        except ChampionChanged:
            pass
    """
)


def test_concurrent_promotes_from_processes_form_one_consistent_chain(registry: ModelRegistry, store: Store) -> None:
    """Every promotion is compare-and-set: the deployment records form a single chain (each one's
    ``previous`` is the champion it replaced), and the alias always names a registered version."""
    versions = [registry.register(_files(str(i)), {}) for i in range(3)]
    rounds = 4
    stop = threading.Event()
    bad_reads: list[object] = []
    seen: set[int] = set()

    def watch() -> None:
        watcher = ModelRegistry(store)
        while not stop.is_set():
            try:
                v = watcher.champion_version()
            except Exception as exc:  # any failure to read is a finding
                bad_reads.append(exc)
                continue
            if v is not None:
                (seen.add(v) if v in versions else bad_reads.append(v))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROMOTE_SCRIPT, store.root, str(v), str(rounds)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for v in versions
    ]
    try:
        outputs = [p.communicate(timeout=240) for p in procs]
    finally:
        stop.set()
        watcher.join()
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err.decode()[-3000:]
    assert not bad_reads

    records = registry.deployments()
    assert len(records) == len(versions) * rounds
    # Promotions are serialised by the lock, so in time order each one replaced the one before:
    # a lost update would show as two records with the same ``previous``.
    assert records == sorted(records, key=lambda r: r["deployed_at"])
    assert records[0]["previous"] is None
    for before, after in zip(records, records[1:], strict=False):
        assert after["previous"] == before["version"], (before, after)
    assert registry.champion() == records[-1]
    assert seen  # the watcher really saw the alias while it moved


# --------------------------------------------------------------------------------------
# a kill during deploy, a damaged champion
# --------------------------------------------------------------------------------------
_KILLED_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    from include.lifecycle.registry import ModelRegistry
    from include.lifecycle.store import Store

    root, where = sys.argv[1], sys.argv[2]
    reg = ModelRegistry(Store.from_uri("file://" + root))
    files = {"model.joblib": b"model bytes a", "features.json": b"{}", "threshold.json": b"{}"}
    claim = {"run_id": "manual__1", "round": 2}

    def killed(real):
        def call(*args, **kwargs):
            if where.endswith("_after"):
                real(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        return call

    if where.startswith("create_model_version"):
        reg.client.create_model_version = killed(reg.client.create_model_version)
        reg.register(files, {"tag": "a"}, claim=claim)
    else:
        n = reg.register(files, {"tag": "a"}, claim=claim)
        setattr(reg.client, where.removesuffix("_after"), killed(getattr(reg.client, where.removesuffix("_after"))))
        reg.promote(n, run_id="manual__1", expected_champion=None)
    """
)


def _kill_during(store: Store, where: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_SCRIPT, store.root, where],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-3000:]


def test_a_kill_before_the_version_exists_leaves_nothing_registered_and_the_retry_finishes(
    registry: ModelRegistry, store: Store
) -> None:
    _kill_during(store, "create_model_version")
    assert registry.versions() == [] and registry.find({"run_id": "manual__1", "round": 2}) is None
    exp = mlflow_env.experiment_id(registry.client, PROBLEM, registry.artifact_root)
    run = tracking.find_run(registry.client, exp, PROBLEM, "manual__1")  # the files went into its run
    assert [a.path for a in registry.client.list_artifacts(run.info.run_id, "registry/round_2")]
    n = registry.register(_files("a"), {"tag": "a"}, claim={"run_id": "manual__1", "round": 2})
    assert n == 1 and registry.versions() == [1]
    assert registry.load(1) == _files("a")  # the retry's files, not the killed try's
    assert registry.client.get_model_version(PROBLEM, "1").run_id == run.info.run_id  # the same run, reused


def test_a_kill_after_the_version_exists_is_reused_by_the_retry(registry: ModelRegistry, store: Store) -> None:
    _kill_during(store, "create_model_version_after")
    claim = {"run_id": "manual__1", "round": 2}
    assert registry.versions() == [1] and registry.find(claim) == 1
    assert registry.register(_files("other bytes"), {"tag": "b"}, claim=claim) == 1  # found, not registered twice
    assert registry.versions() == [1] and registry.metadata(1)["tag"] == "a"
    # another run's (or round's) registration is its own version
    assert registry.register(_files("b"), {}, claim={"run_id": "manual__1", "round": 3}) == 2


def test_a_kill_before_the_alias_moved_leaves_the_champion_and_the_retry_promotes(
    registry: ModelRegistry, store: Store
) -> None:
    _kill_during(store, "set_registered_model_alias")
    assert registry.champion() is None and registry.deployments() == []
    record = registry.promote(1, run_id="manual__1", expected_champion=None)
    assert registry.champion() == record and registry.deployments() == [record]


def test_a_kill_after_the_alias_moved_is_completed_by_the_retry(registry: ModelRegistry, store: Store) -> None:
    _kill_during(store, "set_registered_model_alias_after")
    record = registry.champion()
    assert record["version"] == 1 and record["run_id"] == "manual__1" and registry.deployments() == []
    # the retry compared against "no champion" too: it finds its own promotion and completes it
    again = registry.promote(1, run_id="manual__1", expected_champion=None)
    assert again == record and registry.deployments() == [record]
    assert registry.promote(1, run_id="manual__1", expected_champion=None) == record  # and stays idempotent
    assert registry.deployments() == [record]


def test_a_damaged_champion_is_skipped_for_the_last_intact_one(registry: ModelRegistry) -> None:
    v1 = registry.register(_files("a"), {})
    v2 = registry.register(_files("b"), {})
    v3 = registry.register(_files("c"), {})
    for v, prev in ((v1, None), (v2, v1), (v3, v2)):
        registry.promote(v, run_id=f"run{v}", expected_champion=prev)
    assert registry.last_intact_champion() == (registry.champion(), [])
    _file(registry, v3, "model.joblib").write_bytes(b"corrupted")
    _file(registry, v2, "threshold.json").write_bytes(b"{}")
    record, damaged = registry.last_intact_champion()
    assert record["version"] == v1 and damaged == [v3, v2]
    _file(registry, v1, "features.json").write_bytes(b"[]")
    assert registry.last_intact_champion() == (None, [v3, v2, v1])
    # the alias itself is untouched: a new version can still replace the damaged champion
    v4 = registry.register(_files("d"), {})
    assert registry.promote(v4, run_id="run4", expected_champion=v3)["previous"] == v3


# --------------------------------------------------------------------------------------
# rollback, approval
# --------------------------------------------------------------------------------------
def test_rollback_moves_the_alias_back_and_records_it_on_the_version(registry: ModelRegistry) -> None:
    v1, v2, v3 = (registry.register(_files(t), {}) for t in "abc")
    for v, prev in ((v1, None), (v2, v1), (v3, v2)):
        registry.promote(v, run_id=f"run{v}", expected_champion=prev)
    back = registry.rollback(by="alice", reason="v3 alerts too often")
    assert (back["version"], back["rollback_from"], back["rolled_back_by"]) == (v2, v3, "alice")
    assert registry.champion() == back and registry.champion_version() == v2
    tags = registry.tags(v2)
    assert (tags["rollback.from"], tags["rollback.by"]) == ("3", "alice") and tags["rollback.at"] == back["deployed_at"]
    assert registry.tags(v3)["rollback.replaced_by"] == "2"
    # the rolled-back version keeps its place in the chain: the next rollback goes to v1
    assert back["previous"] == v1 and [r["version"] for r in registry.chain()] == [v2, v1]
    assert registry.rollback(by="alice")["version"] == v1
    with pytest.raises(ValueError, match="has no previous champion: give the version"):
        registry.rollback(by="alice")
    assert registry.rollback(v3, by="bob")["version"] == v3  # forward again, to a given version
    assert [d["version"] for d in registry.deployments()] == [v1, v2, v3, v2, v1, v3]
    # a run that compared against the champion before a rollback must re-evaluate
    v4 = registry.register(_files("d"), {})
    with pytest.raises(ChampionChanged):
        registry.promote(v4, run_id="run4", expected_champion=v1)


def test_rollback_refuses_a_damaged_or_unknown_version(registry: ModelRegistry) -> None:
    with pytest.raises(ValueError, match="has no champion: nothing to roll back"):
        registry.rollback(by="alice")
    v1, v2 = (registry.register(_files(t), {}) for t in "ab")
    registry.promote(v1, run_id="run1", expected_champion=None)
    registry.promote(v2, run_id="run2", expected_champion=v1)
    _file(registry, v1, "model.joblib").write_bytes(b"corrupted")
    with pytest.raises(ValueError, match="version 1 of .* is damaged"):
        registry.rollback(by="alice")
    with pytest.raises(ValueError, match="version 7 is not a registered version"):
        registry.rollback(7, by="alice")
    with pytest.raises(ValueError, match="already the champion"):
        registry.rollback(v2, by="alice")
    assert registry.champion_version() == v2 and len(registry.deployments()) == 2


def test_the_human_approval_is_recorded_on_the_version(registry: ModelRegistry) -> None:
    approval = {"approved": True, "by": "alice", "at": "2026-11-26T10:00:00+00:00", "round": 1}
    n = registry.register(_files("a"), {}, tags=approval_tags(approval))
    tags = registry.tags(n)
    assert (tags["approval.approved"], tags["approval.by"], tags["approval.at"]) == ("true", "alice", approval["at"])
    assert approval_tags(None) == {}  # no approval asked: no tags
    skipped = approval_tags({"approved": True, "by": "skip_approval param", "at": "t"})
    assert skipped["approval.by"] == "skip_approval param"


# --------------------------------------------------------------------------------------
# the artifact store on S3: bundle files through the store, the lock is an S3 object
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def moto_s3() -> object:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_registry(moto_s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    import boto3
    import s3fs

    creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}
    bucket = f"registry-{tmp_path.name.lower().replace('_', '-')}"[:60]
    boto3.client("s3", endpoint_url=moto_s3, **creds).create_bucket(Bucket=bucket)
    mlflow_db_in(tmp_path)
    monkeypatch.setenv(mlflow_env.ENV, f"sqlite:///{tmp_path / 'mlflow.db'}")  # SQLite cannot live in S3
    fs = s3fs.S3FileSystem(
        key="testing", secret="testing", client_kwargs={"endpoint_url": moto_s3}, skip_instance_cache=True
    )
    return ModelRegistry(Store(fs, f"{bucket}/ml/{PROBLEM}"))


def test_on_s3_the_files_go_through_the_store_and_promotions_are_serialised_by_a_lock_object(
    s3_registry: ModelRegistry,
) -> None:
    reg = s3_registry
    versions = [reg.register(_files(str(i)), {}) for i in range(4)]
    mv = reg.client.get_model_version(PROBLEM, "1")
    assert mv.source.startswith(f"s3://{reg.store.root.split('/')[0]}/ml/mlflow-artifacts/{PROBLEM}/")
    assert reg.load(1) == _files("0")
    bucket = reg.store.root.split("/")[0]
    damaged = f"{bucket}/ml/{reg.tags(2)['bundle_path']}/model.joblib"
    assert reg.store.fs.cat_file(damaged) == b"model bytes 1"
    reg.store.fs.pipe_file(damaged, b"tampered in the bucket")
    with pytest.raises(ChecksumError, match="model.joblib.*refusing to load version 2"):
        reg.load(2)
    barrier = threading.Barrier(len(versions))
    won: list[int] = []

    def work(v: int) -> None:
        mine = ModelRegistry(reg.store)
        barrier.wait()
        try:
            mine.promote(v, run_id=f"run-{v}", expected_champion=None)
            won.append(v)
        except ChampionChanged:
            pass

    threads = [threading.Thread(target=work, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and reg.champion_version() == won[0]
    assert not reg.store.exists(".registry.lock")  # released


def test_an_s3_lock_left_by_a_killed_holder_is_broken_after_its_ttl(
    s3_registry: ModelRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from include.lifecycle import registry as registry_module

    reg = s3_registry
    n = reg.register(_files("a"), {})
    held = {"token": "someone", "at": time.time(), "pid": 1}
    reg.store.fs.pipe_file(reg.store.path(".registry.lock"), json.dumps(held).encode())
    monkeypatch.setattr(registry_module, "LOCK_TIMEOUT_SECONDS", 1.0)
    with pytest.raises(RegistryLockTimeout, match=r"\.registry\.lock: the registry lock is held"):
        reg.promote(n, run_id="r", expected_champion=None)
    assert reg.champion() is None
    stale = {**held, "at": time.time() - registry_module.LOCK_TTL_SECONDS - 1}
    reg.store.fs.pipe_file(reg.store.path(".registry.lock"), json.dumps(stale).encode())
    assert reg.promote(n, run_id="r", expected_champion=None)["version"] == n
    assert not reg.store.exists(".registry.lock")
