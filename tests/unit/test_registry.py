"""Unit tests of include/lifecycle/registry.py: immutable numbered versions, sha256 manifests,
tamper detection and the champion pointer moved atomically under a lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import fsspec
import pytest

from include.lifecycle.registry import ChampionChanged, ChecksumError, ModelRegistry
from include.lifecycle.store import Store, sha256_bytes

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.from_uri(f"file://{tmp_path / 'registry'}")


@pytest.fixture
def registry(store: Store) -> ModelRegistry:
    return ModelRegistry(store)


def _files(tag: str) -> dict[str, bytes]:
    return {
        "model.joblib": f"model bytes {tag}".encode(),
        "features.json": json.dumps({"tag": tag}).encode(),
        "threshold.json": b'{"threshold": 0.5}',
    }


# --------------------------------------------------------------------------------------
# versions
# --------------------------------------------------------------------------------------
def test_versions_are_numbered_from_one(registry: ModelRegistry) -> None:
    assert registry.versions() == []
    assert [registry.register(_files(t), {"tag": t}) for t in ("a", "b", "c")] == [1, 2, 3]
    assert registry.versions() == [1, 2, 3]
    for n, tag in zip((1, 2, 3), ("a", "b", "c"), strict=True):
        assert registry.load(n)["model.joblib"] == f"model bytes {tag}".encode()
        meta = registry.metadata(n)
        assert meta["tag"] == tag and meta["version"] == n and "registered_at" in meta


def test_manifest_records_sha256_and_size_of_every_file(registry: ModelRegistry, store: Store) -> None:
    files = _files("a")
    n = registry.register(files, {"tag": "a"})
    manifest = registry.manifest(n)
    assert manifest["version"] == n
    assert set(manifest["files"]) == {*files, "metadata.json"}
    for name, entry in manifest["files"].items():
        on_disk = Path(store.path(f"versions/{n}/{name}")).read_bytes()
        assert entry == {"sha256": sha256_bytes(on_disk), "bytes": len(on_disk)}
        if name in files:
            assert on_disk == files[name]


def test_versions_are_never_overwritten(registry: ModelRegistry, store: Store) -> None:
    n1 = registry.register(_files("a"), {"tag": "a"})
    before = {p.name: p.read_bytes() for p in Path(store.path(f"versions/{n1}")).iterdir()}
    n2 = registry.register(_files("a"), {"tag": "a"})  # identical content still gets a new number
    assert n2 == n1 + 1
    after = {p.name: p.read_bytes() for p in Path(store.path(f"versions/{n1}")).iterdir()}
    assert after == before


def test_incomplete_version_is_not_listed_and_its_number_is_not_reused(registry: ModelRegistry, store: Store) -> None:
    registry.register(_files("a"), {})
    # A crashed registration: the folder exists, the manifest (written last) does not.
    Path(store.path("versions/2")).mkdir(parents=True)
    Path(store.path("versions/2/model.joblib")).write_bytes(b"half written")
    assert registry.versions() == [1]
    assert registry.register(_files("c"), {}) == 3
    assert registry.versions() == [1, 3]
    assert Path(store.path("versions/2/model.joblib")).read_bytes() == b"half written"


def test_reserved_names_are_refused(registry: ModelRegistry) -> None:
    for name in ("manifest.json", "metadata.json"):
        with pytest.raises(ValueError, match="written by the registry"):
            registry.register({name: b"{}"}, {})
    assert registry.versions() == []


def test_concurrent_registrations_get_distinct_numbers(registry: ModelRegistry) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        n = registry.register(_files(str(i)), {"worker": i})
        with lock:
            results.append(n)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 9))
    assert registry.versions() == list(range(1, 9))
    for n in results:  # every version holds exactly its own worker's files
        worker = registry.metadata(n)["worker"]
        assert registry.load(n)["model.joblib"] == f"model bytes {worker}".encode()


def test_object_store_versions_are_numbered_too() -> None:
    fs = fsspec.filesystem("memory")
    root = "/registry-test-object-store"
    if fs.exists(root):
        fs.rm(root, recursive=True)
    registry = ModelRegistry(Store(fs, root))
    assert not registry.store.is_local
    assert [registry.register(_files(t), {}) for t in ("a", "b", "c")] == [1, 2, 3]
    assert registry.load(2)["model.joblib"] == b"model bytes b"
    fs.pipe_file(f"{root}/versions/2/model.joblib", b"evil")
    with pytest.raises(ChecksumError):
        registry.load(2)
    fs.rm(root, recursive=True)


# --------------------------------------------------------------------------------------
# checksums
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["model.joblib", "features.json", "metadata.json"])
def test_tampered_file_is_refused(registry: ModelRegistry, store: Store, tmp_path: Path, name: str) -> None:
    n = registry.register(_files("a"), {"tag": "a"})
    registry.load(n)  # intact: loads
    path = Path(store.path(f"versions/{n}/{name}"))
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01  # one flipped bit
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=f"versions/{n}/{name}.*refusing to load version {n}"):
        registry.load(n)
    out = tmp_path / "materialised"
    with pytest.raises(ChecksumError):
        registry.materialise(n, out)
    assert not (out / name).exists()


def test_truncated_file_is_refused(registry: ModelRegistry, store: Store) -> None:
    n = registry.register(_files("a"), {})
    Path(store.path(f"versions/{n}/model.joblib")).write_bytes(b"")
    with pytest.raises(ChecksumError):
        registry.load(n)


def test_tampering_one_version_leaves_others_loadable(registry: ModelRegistry, store: Store) -> None:
    registry.register(_files("a"), {})
    registry.register(_files("b"), {})
    Path(store.path("versions/1/threshold.json")).write_text('{"threshold": 0.0}')
    with pytest.raises(ChecksumError):
        registry.load(1)
    assert registry.load(2)["threshold.json"] == b'{"threshold": 0.5}'


def test_materialise_writes_a_verified_copy(registry: ModelRegistry, tmp_path: Path) -> None:
    files = {**_files("a"), "sub/extra.bin": bytes(range(256))}
    n = registry.register(files, {})
    out = registry.materialise(n, tmp_path / "copy")
    for name, data in files.items():
        assert (out / name).read_bytes() == data
    assert json.loads((out / "metadata.json").read_text())["version"] == n


# --------------------------------------------------------------------------------------
# champion
# --------------------------------------------------------------------------------------
def test_promote_moves_the_champion_and_records_each_deployment(registry: ModelRegistry) -> None:
    v1 = registry.register(_files("a"), {})
    v2 = registry.register(_files("b"), {})
    assert registry.champion() is None
    r1 = registry.promote(v1, run_id="manual__2026-01-01T00:00:00+00:00", expected_champion=None, details={"x": 1})
    assert r1["version"] == v1 and r1["previous"] is None and r1["x"] == 1
    assert registry.champion() == r1
    r2 = registry.promote(v2, run_id="scheduled__2026-01-02", expected_champion=v1)
    assert (r2["version"], r2["previous"]) == (v2, v1)
    assert registry.champion() == r2
    deployments = sorted(registry.deployments(), key=lambda r: r["version"])
    assert deployments == [r1, r2]


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


def test_only_complete_versions_can_be_promoted(registry: ModelRegistry, store: Store) -> None:
    with pytest.raises(ValueError, match="not a complete registered version"):
        registry.promote(1, run_id="r", expected_champion=None)
    Path(store.path("versions/1")).mkdir(parents=True)  # allocated, never completed
    with pytest.raises(ValueError):
        registry.promote(1, run_id="r", expected_champion=None)
    assert registry.champion() is None


def test_concurrent_promotes_from_threads_let_exactly_one_win(registry: ModelRegistry) -> None:
    versions = [registry.register(_files(str(i)), {}) for i in range(8)]
    barrier = threading.Barrier(len(versions))
    won: list[int] = []
    lost: list[int] = []

    def work(v: int) -> None:
        barrier.wait()
        try:
            registry.promote(v, run_id=f"run-{v}", expected_champion=None)
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
    """Every promotion is compare-and-swap: the deployment records form a single chain
    (each one's ``previous`` is the champion it replaced), and the pointer is always JSON."""
    versions = [registry.register(_files(str(i)), {}) for i in range(4)]
    rounds = 5
    champion_path = Path(store.path("champion.json"))
    stop = threading.Event()
    bad_reads: list[str] = []
    reads = 0

    def watch() -> None:
        nonlocal reads
        while not stop.is_set():
            try:
                text = champion_path.read_text()
            except FileNotFoundError:
                continue
            try:
                record = json.loads(text)
                assert record["version"] in versions
                reads += 1
            except (ValueError, KeyError, AssertionError):
                bad_reads.append(text)

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
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        stop.set()
        watcher.join()
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err.decode()
    assert not bad_reads

    records = registry.deployments()
    assert len(records) == len(versions) * rounds
    # Promotions are serialised by the lock, so in time order each one replaced the one before:
    # a lost update would show as two records with the same ``previous``.
    records.sort(key=lambda r: r["deployed_at"])
    assert records[0]["previous"] is None
    for before, after in zip(records, records[1:], strict=False):
        assert after["previous"] == before["version"], (before, after)
    assert registry.champion() == records[-1]
    assert reads > 0  # the watcher really saw the pointer while it moved


# --------------------------------------------------------------------------------------
# a kill during registration, a damaged champion
# --------------------------------------------------------------------------------------
def _killed_half_way(store: Store, n: int, claim: dict) -> Path:
    """What a deploy killed after two writes leaves: its claim, one file and a temp file."""
    folder = Path(store.path(f"versions/{n}"))
    folder.mkdir(parents=True)
    (folder / "claim.json").write_text(json.dumps(claim))
    (folder / "model.joblib").write_bytes(b"half")
    (folder / ".features.json.0123abcd.tmp").write_bytes(b"{")
    return folder


def test_a_retry_after_a_kill_reuses_its_half_written_version(registry: ModelRegistry, store: Store) -> None:
    claim = {"run_id": "manual__1", "round": 2}
    folder = _killed_half_way(store, 1, claim)
    assert registry.versions() == [] and registry.incomplete() == [1]
    n = registry.register(_files("a"), {"tag": "a"}, claim=claim)
    assert n == 1  # the same number, no orphan folder
    assert registry.versions() == [1] and registry.incomplete() == []
    assert not list(folder.glob("*.tmp"))
    assert registry.load(1)["model.joblib"] == b"model bytes a"
    assert json.loads((folder / "claim.json").read_text()) == claim
    assert "claim.json" not in registry.load(1)  # bookkeeping, not one of the version's files


def test_another_runs_half_written_version_is_left_alone(registry: ModelRegistry, store: Store) -> None:
    _killed_half_way(store, 1, {"run_id": "manual__other", "round": 1})  # maybe still being written
    n = registry.register(_files("a"), {}, claim={"run_id": "manual__mine", "round": 1})
    assert n == 2 and registry.versions() == [2] and registry.incomplete() == [1]
    assert (Path(store.path("versions/1")) / "model.joblib").read_bytes() == b"half"


def test_a_damaged_champion_is_skipped_for_the_last_intact_one(registry: ModelRegistry, store: Store) -> None:
    v1 = registry.register(_files("a"), {})
    v2 = registry.register(_files("b"), {})
    v3 = registry.register(_files("c"), {})
    for v, prev in ((v1, None), (v2, v1), (v3, v2)):
        registry.promote(v, run_id=f"run{v}", expected_champion=prev)
    assert registry.last_intact_champion() == (registry.champion(), [])
    Path(store.path(f"versions/{v3}/model.joblib")).write_bytes(b"corrupted")
    Path(store.path(f"versions/{v2}/threshold.json")).write_bytes(b"{}")
    record, damaged = registry.last_intact_champion()
    assert record["version"] == v1 and damaged == [v3, v2]
    Path(store.path(f"versions/{v1}/features.json")).write_bytes(b"[]")
    assert registry.last_intact_champion() == (None, [v3, v2, v1])
    # the champion pointer itself is untouched: a new version can still replace it
    v4 = registry.register(_files("d"), {})
    assert registry.promote(v4, run_id="run4", expected_champion=v3)["previous"] == v3
