"""The model registry is MLflow's Model Registry: one registered model per problem, the champion is
its alias ``champion``.

    registered model <problem>          (mlflow_env: SQLite in the artifact root, or $MLFLOW_TRACKING_URI)
      version n                         one deployed candidate; its files are artifacts of the MLflow
                                        run of the DAG run that trained it, under registry/round_<k>/
        tags manifest                   sha256 and size of every file (in the registry database, not
                                        next to the files: a file changed in the artifact store is caught)
             metadata, lineage,         the run, round, metric and score; where the model came from
             lineage.<key>              (also one tag per lineage field, for the UI)
             airflow.run_id, round,     who registered it: a retry of the same run and round finds
             claim                      and reuses its version instead of registering a second one
             approval.*                 the human approval (approved, by, at), when the spec asks for one
             deployment                 the record of its latest promotion (written before the alias moves)
             rollback.*                 a rollback that made it the champion again (from, by, at)
      alias champion                    the deployed version
      tags deployment.<time>.v<n>       one record per promotion or rollback: the deployment history

Loading a version reads every file and checks its sha256 against the manifest before anything
is returned, so a corrupted or tampered file (joblib files are pickles) is refused before it is
deserialised. A version exists only once all its files are written: MLflow creates it (with its
manifest tag) in one call after the upload, so a kill during deploy leaves at most files of a run
that a retry overwrites, never a half-registered version.

Promotion is a compare-and-set: MLflow has no atomic "move the alias if it still points at X",
so reading the alias, comparing and moving it happen under a lock: ``fcntl`` on a file in the
problem's folder when the artifact store is local, an S3 lock object created with a conditional
write (``If-None-Match: *``; a lock older than ``LOCK_TTL_SECONDS`` is taken as left by a killed
holder and broken) when it is on S3. Two runs that compared against the same champion cannot both
replace it: the second gets :class:`ChampionChanged` and re-checks.

mlflow is imported inside the methods (it takes about 2 s): DAG files never pay for it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import posixpath
import random
import re
import tempfile
import time
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any

from include.lifecycle import mlflow_env
from include.lifecycle.store import Store, sha256_bytes, to_json

ALIAS = "champion"
BUNDLE_DIR = "registry"  # under the MLflow run's artifacts: registry/round_<k>/<file>
LOCK_NAME = ".registry.lock"  # in the problem's folder of the artifact store
LOCK_TTL_SECONDS = 600.0  # an S3 lock object older than this was left by a killed holder
LOCK_TIMEOUT_SECONDS = 300.0

TAG_MANIFEST = "manifest"
TAG_METADATA = "metadata"
TAG_LINEAGE = "lineage"
TAG_CLAIM = "claim"
TAG_RUN_ID = "airflow.run_id"
TAG_DAG_ID = "airflow.dag_id"
TAG_ROUND = "round"
TAG_BUNDLE = "bundle_uri"
TAG_BUNDLE_PATH = "bundle_path"  # the files' folder below the artifact root
TAG_DEPLOYMENT = "deployment"
DEPLOYMENT_PREFIX = "deployment."
APPROVAL_PREFIX = "approval."
ROLLBACK_PREFIX = "rollback."
RESERVED_FILES = frozenset({"manifest.json", "metadata.json", "claim.json"})


class ChecksumError(RuntimeError):
    """A registered file does not match the sha256 recorded when it was registered."""


class ChampionChanged(RuntimeError):
    """Another run moved the champion between this run's comparison and its promotion."""


class RegistryLockTimeout(RuntimeError):
    """The registry lock could not be taken in time (names the lock and its holder)."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _tag_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def approval_tags(record: dict[str, Any] | None) -> dict[str, str]:
    """A run's human approval (its ``approval.json``, written by ``approve_deployment``) as tags of
    the version it deploys: ``approval.approved``, ``approval.by`` (the user who answered, or
    ``skip_approval param``), ``approval.at``. Empty when the spec asks for no approval."""
    if not record:
        return {}
    return {
        f"{APPROVAL_PREFIX}approved": str(bool(record.get("approved"))).lower(),
        f"{APPROVAL_PREFIX}by": str(record.get("by") or "unknown"),
        f"{APPROVAL_PREFIX}at": str(record.get("at") or ""),
    }


def _claim_key(claim: dict[str, Any]) -> str:
    return f"{claim['run_id']}#round{claim['round']}"


def _not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def _no_alias(exc: Exception) -> bool:
    """No registered model, or no such alias (MLflow answers INVALID_PARAMETER_VALUE for the latter)."""
    return _not_found(exc) or (
        getattr(exc, "error_code", None) == "INVALID_PARAMETER_VALUE"
        and "alias" in str(exc)
        and "not found" in str(exc)
    )


def _strip_scheme(uri: str) -> str:
    """``file:///a/b`` -> ``/a/b``; ``s3://conn@bucket/k`` -> ``bucket/k`` (the path an fsspec filesystem uses)."""
    if uri.startswith("file://"):
        return uri.removeprefix("file://")
    rest = re.sub(r"^[a-zA-Z0-9+.-]+://", "", uri)
    head, sep, tail = rest.partition("/")
    return (head.rsplit("@", 1)[-1] + sep + tail) if "@" in head else rest


class ModelRegistry:
    """The registered model ``name`` (default: the last folder of ``store``, the problem's folder
    of the artifact store) in the MLflow store of the artifact root ``store`` lives in.

    :param store: the problem's folder of the artifact store (``<root>/<problem>``): bundle files are
        written and read through it (the backend's credentials and encryption), the lock lives in it.
    :param name: the registered model's name; the problem.
    :param client: an ``mlflow.MlflowClient`` (default: :func:`mlflow_env.client` of the artifact root).
    """

    def __init__(self, store: Store, name: str | None = None, *, client: Any = None) -> None:
        self.store = store
        self.name = name or posixpath.basename(store.root.rstrip("/"))
        self.artifact_root = store.uri().rstrip("/").rsplit("/", 1)[0]
        self._client = client

    # --- MLflow ---------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = mlflow_env.client(self.artifact_root)
        return self._client

    @property
    def tracking_uri(self) -> str:
        return str(getattr(self.client, "_registry_uri", None) or mlflow_env.tracking_uri(self.artifact_root))

    def where(self) -> str:
        """The registered model, for messages: ``card_fraud in sqlite:///.../mlflow.db``."""
        return f"registered model {self.name!r} in {self.tracking_uri}"

    def model_uri(self, version: int) -> str:
        return f"models:/{self.name}/{version}"

    def _ensure_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.name)
            return
        except MlflowException as exc:
            if not _not_found(exc):
                raise
        try:
            self.client.create_registered_model(
                self.name, description=f"The {self.name} models deployed by the ML lifecycle DAG (alias: {ALIAS})."
            )
        except MlflowException:  # another process created it first
            self.client.get_registered_model(self.name)

    def _all_versions(self) -> list[Any]:
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.search_model_versions(f"name = '{self.name}'", max_results=10_000)
        except MlflowException as exc:
            if _not_found(exc):
                return []
            raise
        return sorted(found, key=lambda mv: int(mv.version))

    def _version(self, version: int) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(self.name, str(version))
        except MlflowException as exc:
            if _not_found(exc):
                raise KeyError(f"{self.where()} has no version {version}") from exc
            raise

    # --- versions -------------------------------------------------------------------------------
    def versions(self) -> list[int]:
        """The registered versions (those this registry made: with a manifest), ascending."""
        return [int(mv.version) for mv in self._all_versions() if TAG_MANIFEST in mv.tags]

    def find(self, claim: dict[str, Any]) -> int | None:
        """The version registered with ``claim`` (``{"run_id", "round"}``), if any."""
        key = _claim_key(claim)
        return next((int(mv.version) for mv in self._all_versions() if mv.tags.get(TAG_CLAIM) == key), None)

    def _run_for(self, claim: dict[str, Any] | None) -> tuple[str, bool]:
        """``(MLflow run id, whether this call created it for itself)``: the DAG run's MLflow run
        (found or created by its tags, as the tracking step does), or a run of its own."""
        from include.lifecycle import tracking

        exp = mlflow_env.experiment_id(self.client, self.name, self.artifact_root)
        if claim is not None:
            return tracking.find_or_create_run(self.client, exp, self.name, str(claim["run_id"])), False
        run = self.client.create_run(exp, run_name="model-registration", tags={"registered_by": "ModelRegistry"})
        return run.info.run_id, True

    def _relative(self, uri: str) -> str | None:
        """``uri``'s path below the artifact root, when ``uri`` is in the same artifact store (the usual
        case: the experiment's artifacts live in ``<root>/mlflow-artifacts``); else None."""
        root, path = _strip_scheme(self.artifact_root).rstrip("/"), _strip_scheme(uri).rstrip("/")
        same_scheme = uri.split("://", 1)[0] == self.artifact_root.split("://", 1)[0]
        return path.removeprefix(root + "/") if same_scheme and path.startswith(root + "/") else None

    def _files_store(self, uri: str) -> Store | None:
        """A store on ``uri`` through this registry's filesystem (credentials, encryption), when
        ``uri`` is in the artifact store; else None (MLflow's own artifact client is used)."""
        rel = self._relative(uri)
        return Store(self.store.fs, posixpath.join(_strip_scheme(self.artifact_root).rstrip("/"), rel)) if rel else None

    def _bundle_store(self, tags: dict[str, str], source: str) -> Store | None:
        """Where a version's files are read from: ``bundle_path`` below this artifact root when it is
        there (so an artifact root copied or moved elsewhere, with its mlflow.db, still loads), else
        the version's source URI in the artifact store; None: only MLflow can fetch them."""
        rel = tags.get(TAG_BUNDLE_PATH)
        if rel:
            here = Store(self.store.fs, posixpath.join(_strip_scheme(self.artifact_root).rstrip("/"), rel))
            if here.exists():
                return here
        return self._files_store(source)

    def register(
        self,
        files: dict[str, bytes],
        metadata: dict[str, Any],
        *,
        claim: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
    ) -> int:
        """A new version holding ``files``; returns its number.

        ``claim`` (``{"run_id": <Airflow run id>, "round": k}``) names who registers: if a version
        with this claim exists (an earlier try registered it, then was killed), it is returned
        instead of registering a second one; the files go into the MLflow run of that DAG run.
        ``metadata`` is kept as a tag (``metadata(n)``); a ``lineage.json`` file is also kept as tags;
        ``tags`` are added to the version's tags (e.g. the approval)."""
        if RESERVED_FILES & set(files):
            raise ValueError(f"{sorted(RESERVED_FILES)} are written by the registry, not passed in")
        if claim is not None:
            found = self.find(claim)
            if found is not None:
                return found
        self._ensure_model()
        mlflow_run, own_run = self._run_for(claim)
        run = self.client.get_run(mlflow_run)
        folder = f"{BUNDLE_DIR}/round_{claim['round']}" if claim is not None else BUNDLE_DIR
        source = f"{run.info.artifact_uri.rstrip('/')}/{folder}"
        manifest = {name: {"sha256": sha256_bytes(data), "bytes": len(data)} for name, data in sorted(files.items())}
        target = self._files_store(source)
        if target is not None:
            for name in target.ls():  # what an earlier, killed try of this run and round left
                target.fs.rm(target.path(name), recursive=True)
            for name, data in sorted(files.items()):
                target.write_bytes(name, data)
        else:  # an experiment whose artifacts live elsewhere (e.g. a tracking server's own store)
            with tempfile.TemporaryDirectory(prefix="registry-") as tmp:
                for name, data in files.items():
                    Path(tmp, name).parent.mkdir(parents=True, exist_ok=True)
                    Path(tmp, name).write_bytes(data)
                self.client.log_artifacts(mlflow_run, tmp, artifact_path=folder)
        meta = {**metadata, "registered_at": _now()}
        version_tags: dict[str, str] = {
            TAG_MANIFEST: to_json(manifest),
            TAG_METADATA: to_json(meta),
            TAG_BUNDLE: source,
            TAG_DAG_ID: self.name,
        }
        if self._relative(source):
            version_tags[TAG_BUNDLE_PATH] = self._relative(source)
        if claim is not None:
            version_tags |= {
                TAG_CLAIM: _claim_key(claim),
                TAG_RUN_ID: str(claim["run_id"]),
                TAG_ROUND: str(claim["round"]),
            }
        for key in ("metric", "test_score", "trained_in_round"):
            if metadata.get(key) is not None:
                version_tags[key] = _tag_value(metadata[key])
        if "lineage.json" in files:
            lineage = json.loads(files["lineage.json"])
            version_tags[TAG_LINEAGE] = to_json(lineage)
            version_tags |= {f"{TAG_LINEAGE}.{k}": _tag_value(v) for k, v in lineage.items() if v is not None}
        version_tags |= {k: _tag_value(v) for k, v in (tags or {}).items() if v is not None}
        mv = self.client.create_model_version(
            self.name,
            source,
            run_id=mlflow_run,
            tags=version_tags,
            description=f"registered by run {claim['run_id']} round {claim['round']}" if claim else None,
        )
        if own_run:
            self.client.set_terminated(mlflow_run, "FINISHED")
        return int(mv.version)

    def set_tags(self, version: int, tags: dict[str, Any]) -> None:
        """Add tags to a version (e.g. an approval given after it was registered)."""
        for key, value in tags.items():
            if value is not None:
                self.client.set_model_version_tag(self.name, str(version), key, _tag_value(value))

    def tags(self, version: int) -> dict[str, str]:
        return dict(self._version(version).tags)

    def manifest(self, version: int) -> dict[str, Any]:
        """``{"version": n, "files": {name: {"sha256", "bytes"}}}`` (KeyError: no such version)."""
        tags = self._version(version).tags
        if TAG_MANIFEST not in tags:
            raise KeyError(f"{self.where()} version {version} has no manifest tag: not registered by this registry")
        return {"version": int(version), "files": json.loads(tags[TAG_MANIFEST])}

    def metadata(self, version: int) -> dict[str, Any]:
        mv = self._version(version)
        return {**json.loads(mv.tags.get(TAG_METADATA) or "{}"), "version": int(version)}

    def lineage(self, version: int) -> dict[str, Any]:
        """Where the version came from (its ``lineage.json``, kept as a tag); {} if it has none."""
        return json.loads(self._version(version).tags.get(TAG_LINEAGE) or "{}")

    def load(self, version: int) -> dict[str, bytes]:
        """Every file of a version, each one's sha256 checked before any is returned."""
        mv = self._version(version)
        if TAG_MANIFEST not in mv.tags:
            raise KeyError(f"{self.where()} version {version} has no manifest tag: not registered by this registry")
        entries = json.loads(mv.tags[TAG_MANIFEST])
        source = mv.tags.get(TAG_BUNDLE) or mv.source
        files: dict[str, bytes] = {}
        store = self._bundle_store(mv.tags, source)
        with contextlib.ExitStack() as stack:
            if store is None:
                import mlflow.artifacts

                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="registry-"))
                mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp, tracking_uri=self.tracking_uri)
                store = Store.from_uri(Path(tmp).as_uri())
            for name, entry in entries.items():
                data = store.read_bytes(name)
                if sha256_bytes(data) != entry["sha256"]:
                    raise ChecksumError(
                        f"{store.uri(name)}: sha256 {sha256_bytes(data)[:12]}... does not match the registered "
                        f"{entry['sha256'][:12]}... ({self.where()}); refusing to load version {version}"
                    )
                files[name] = data
        return files

    def intact(self, version: int) -> bool:
        """Every file of ``version`` matches its checksum (a missing file or manifest: not intact)."""
        try:
            self.load(version)
        except (ChecksumError, FileNotFoundError, KeyError, ValueError):
            return False
        return True

    def materialise(self, version: int, local_dir: str | Path) -> Path:
        """Write a verified copy of a version into a local folder (to load models from)."""
        local_dir = Path(local_dir)
        for name, data in self.load(version).items():
            target = local_dir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return local_dir

    # --- champion -------------------------------------------------------------------------------
    def champion(self) -> dict[str, Any] | None:
        """The champion's deployment record (``version``, ``previous``, ``run_id``, ``deployed_at``,
        what the promotion added), or None when the alias is not set."""
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(self.name, ALIAS)
        except MlflowException as exc:
            if _no_alias(exc):
                return None
            raise
        record = json.loads(mv.tags[TAG_DEPLOYMENT]) if TAG_DEPLOYMENT in mv.tags else None
        if record is None or int(record.get("version", -1)) != int(mv.version):
            # the alias was moved outside this registry (the MLflow UI): no record of ours
            record = {
                "version": int(mv.version),
                "previous": None,
                "run_id": mv.tags.get(TAG_RUN_ID),
                "deployed_at": None,
            }
        return record

    def champion_version(self) -> int | None:
        from mlflow.exceptions import MlflowException

        try:
            return int(self.client.get_model_version_by_alias(self.name, ALIAS).version)
        except MlflowException as exc:
            if _no_alias(exc):
                return None
            raise

    def deployments(self) -> list[dict[str, Any]]:
        """Every promotion and rollback, oldest first."""
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_registered_model(self.name).tags
        except MlflowException as exc:
            if _not_found(exc):
                return []
            raise
        return [json.loads(v) for k, v in sorted(tags.items()) if k.startswith(DEPLOYMENT_PREFIX)]

    def chain(self) -> list[dict[str, Any]]:
        """The promotion chain, newest first: the champion, then each record's ``previous``."""
        by_version: dict[int, dict[str, Any]] = {}
        for d in self.deployments():  # the latest record of each version
            by_version[int(d["version"])] = d
        out, record, seen = [], self.champion(), set()
        while record is not None and int(record["version"]) not in seen:
            out.append(record)
            seen.add(int(record["version"]))
            previous = record.get("previous")
            record = by_version.get(int(previous)) if previous is not None else None
        return out

    def last_intact_champion(self) -> tuple[dict[str, Any] | None, list[int]]:
        """(the newest champion in the promotion chain whose files are intact, the damaged ones
        skipped on the way)."""
        damaged = []
        for record in self.chain():
            if self.intact(int(record["version"])):
                return record, damaged
            damaged.append(int(record["version"]))
        return None, damaged

    @contextlib.contextmanager
    def _lock(self) -> Generator[None, None, None]:
        if self.store.is_local:
            os.makedirs(self.store.root, exist_ok=True)
            with open(self.store.path(LOCK_NAME), "a+") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
            return
        with _object_lock(self.store, LOCK_NAME):
            yield

    def _record(self, version: int, record: dict[str, Any]) -> None:
        """Write a deployment record, then move the alias (under the lock). A kill between the two
        leaves the version's ``deployment`` tag of a promotion that did not happen (overwritten by
        the next one); a kill after the alias leaves the history entry missing, which
        :meth:`promote` (retried) and :meth:`rollback` write."""
        self.client.set_model_version_tag(self.name, str(version), TAG_DEPLOYMENT, to_json(record))
        self.client.set_registered_model_alias(self.name, ALIAS, str(version))
        self._history(record)

    def _history(self, record: dict[str, Any]) -> None:
        stamp = re.sub(r"[^0-9]", "", record["deployed_at"])[:20]
        key = f"{DEPLOYMENT_PREFIX}{stamp}.v{record['version']}"
        self.client.set_registered_model_tag(self.name, key, to_json(record))

    def promote(
        self, version: int, *, run_id: str, expected_champion: int | None, details: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Make ``version`` the champion, if the champion is still ``expected_champion``.

        The read, the check and the move happen under the lock, so two runs cannot both replace
        the champion they compared against. A retry of a promotion that was killed after moving the
        alias (the champion is ``version``, promoted by ``run_id``) completes it and returns its record."""
        if version not in self.versions():
            raise ValueError(f"version {version} is not a complete registered version of {self.where()}")
        with self._lock():
            current = self.champion()
            current_version = int(current["version"]) if current else None
            if current is not None and current_version == version and current.get("run_id") == run_id:
                self._history(current)  # idempotent: the same key and record
                return current
            if current_version != expected_champion:
                raise ChampionChanged(
                    f"champion is now version {current_version}, not {expected_champion} as compared; re-evaluate"
                )
            record = {
                "version": version,
                "previous": current_version,
                "run_id": run_id,
                "deployed_at": _now(),
                "model_uri": self.model_uri(version),
                **(details or {}),
            }
            self._record(version, record)
        return record

    def rollback(self, to: int | None = None, *, by: str, reason: str | None = None) -> dict[str, Any]:
        """Move the alias back: to the champion's ``previous``, or to version ``to``; the target must
        be intact (every checksum). Recorded in the history and on the target's tags
        (``rollback.from``, ``rollback.by``, ``rollback.at``). The target keeps its place in the
        chain: its ``previous`` is the one it had when it was promoted (or the champion it replaces,
        for a version that never was champion). Raises ValueError with what is wrong."""
        with self._lock():
            current = self.champion()
            if current is None:
                raise ValueError(f"{self.where()} has no champion: nothing to roll back")
            current_version = int(current["version"])
            if to is None:
                if current.get("previous") is None:
                    raise ValueError(
                        f"champion version {current_version} of {self.where()} has no previous champion: "
                        "give the version to roll back to"
                    )
                to = int(current["previous"])
            to = int(to)
            if to == current_version:
                raise ValueError(f"version {to} is already the champion of {self.where()}")
            if to not in self.versions():
                raise ValueError(f"version {to} is not a registered version of {self.where()}")
            if not self.intact(to):
                raise ValueError(
                    f"version {to} of {self.where()} is damaged (a file does not match its sha256): "
                    "not rolling back to it"
                )
            earlier = [d for d in self.deployments() if int(d["version"]) == to]
            previous = earlier[-1].get("previous") if earlier else current_version
            at = _now()
            record = {
                "version": to,
                "previous": previous,
                "run_id": None,
                "deployed_at": at,
                "model_uri": self.model_uri(to),
                "rollback_from": current_version,
                "rolled_back_by": by,
                "reason": reason or f"rollback from version {current_version}",
            }
            self.set_tags(
                to, {f"{ROLLBACK_PREFIX}from": current_version, f"{ROLLBACK_PREFIX}by": by, f"{ROLLBACK_PREFIX}at": at}
            )
            self.set_tags(current_version, {f"{ROLLBACK_PREFIX}replaced_by": to, f"{ROLLBACK_PREFIX}replaced_at": at})
            self._record(to, record)
        return record


@contextlib.contextmanager
def _object_lock(store: Store, name: str) -> Generator[None, None, None]:
    """A lock object in an object store: created with a conditional write (S3 ``If-None-Match: *``:
    only one writer can create it), deleted on release. One older than ``LOCK_TTL_SECONDS`` was
    left by a killed holder (the critical section takes well under a second) and is broken."""
    path = store.path(name)
    token = uuid.uuid4().hex
    body = json.dumps({"token": token, "at": time.time(), "pid": os.getpid()}).encode()
    deadline = time.monotonic() + LOCK_TIMEOUT_SECONDS
    while True:
        try:
            store.fs.pipe_file(path, body, mode="create")
            break
        except FileExistsError:
            try:
                held = json.loads(store.fs.cat_file(path))
            except (FileNotFoundError, ValueError):
                continue  # released (or being written) meanwhile: try again
            if time.time() - float(held.get("at", 0)) > LOCK_TTL_SECONDS:
                with contextlib.suppress(FileNotFoundError):
                    store.fs.rm(path)
                continue
            if time.monotonic() > deadline:
                raise RegistryLockTimeout(
                    f"{store.uri(name)}: the registry lock is held (since {held.get('at')}, pid {held.get('pid')}) "
                    f"for more than {LOCK_TIMEOUT_SECONDS:.0f} s"
                ) from None
            time.sleep(0.05 + random.random() * 0.2)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError, ValueError):
            if json.loads(store.fs.cat_file(path)).get("token") == token:
                store.fs.rm(path)
