"""The model registry in the artifact store: immutable numbered versions and a champion pointer.

    registry/versions/<n>/...            model, preprocessing, metrics, threshold, lineage
    registry/versions/<n>/manifest.json  sha256 of every file (written last: the version is complete)
    registry/versions/<n>/claim.json     who is writing the version (written first; bookkeeping,
                                         not part of the version's files)
    registry/champion.json               pointer to the deployed version, replaced atomically
    registry/deployments/<n>-<run>.json  one record per promotion

Loading a version verifies every checksum first, so a corrupted or tampered file (joblib
files are pickles) is refused before it is deserialised.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

from include.lifecycle.store import Store, safe_run_id, sha256_bytes, to_json


class ChecksumError(RuntimeError):
    """A registry file does not match the sha256 recorded when it was registered."""


class ChampionChanged(RuntimeError):
    """Another run moved the champion between this run's comparison and its promotion."""


class ModelRegistry:
    def __init__(self, store: Store) -> None:
        self.store = store

    # --- versions ------------------------------------------------------------------------
    def versions(self) -> list[int]:
        """Complete versions (those with a manifest), ascending."""
        out = []
        for name in self.store.ls("versions"):
            if name.isdigit() and self.store.exists(f"versions/{name}/manifest.json"):
                out.append(int(name))
        return sorted(out)

    def _allocate(self) -> int:
        taken = [int(n) for n in self.store.ls("versions") if n.isdigit()]
        n = max(taken, default=0) + 1
        if not self.store.is_local:
            return n  # object stores: registry writes are serialised by the Airflow pool
        while True:
            try:
                os.makedirs(self.store.path("versions"), exist_ok=True)
                os.mkdir(self.store.path(f"versions/{n}"))  # atomic claim of the number
                return n
            except FileExistsError:
                n += 1

    def incomplete(self) -> list[int]:
        """Version folders without a manifest: a registration that was killed half-way (or is running)."""
        return sorted(
            int(n)
            for n in self.store.ls("versions")
            if n.isdigit() and not self.store.exists(f"versions/{n}/manifest.json")
        )

    def _reclaim(self, claim: dict[str, Any]) -> int | None:
        """The incomplete version an earlier try with the same ``claim`` left behind, emptied for reuse."""
        for n in self.incomplete():
            if self.store.read_json_or(f"versions/{n}/claim.json") == claim:
                for name in self.store.ls(f"versions/{n}"):
                    self.store.fs.rm(self.store.path(f"versions/{n}/{name}"), recursive=True)
                return n
        return None

    def register(
        self, files: dict[str, bytes], metadata: dict[str, Any], *, claim: dict[str, Any] | None = None
    ) -> int:
        """Store a new immutable version; returns its number.

        ``claim`` (e.g. ``{"run_id": ..., "round": ...}``) names who registers: it is written
        first, so a retry after a kill finds the half-written version it claimed and reuses that
        number (stray temporary files and all are cleared) instead of leaving an orphan folder."""
        if {"manifest.json", "metadata.json", "claim.json"} & set(files):
            raise ValueError("manifest.json, metadata.json and claim.json are written by the registry")
        n = self._reclaim(claim) if claim is not None else None
        if n is None:
            n = self._allocate()
        if claim is not None:
            self.store.write_json(f"versions/{n}/claim.json", claim)
        entries = {}
        for name, data in sorted(files.items()):
            self.store.write_bytes(f"versions/{n}/{name}", data)
            entries[name] = {"sha256": sha256_bytes(data), "bytes": len(data)}
        meta = {**metadata, "version": n, "registered_at": dt.datetime.now(dt.UTC).isoformat()}
        meta_bytes = to_json(meta).encode()
        self.store.write_bytes(f"versions/{n}/metadata.json", meta_bytes)
        entries["metadata.json"] = {"sha256": sha256_bytes(meta_bytes), "bytes": len(meta_bytes)}
        self.store.write_json(f"versions/{n}/manifest.json", {"version": n, "files": entries})
        return n

    def intact(self, version: int) -> bool:
        """Every file of ``version`` matches its checksum (a missing file or manifest: not intact)."""
        try:
            self.load(version)
        except (ChecksumError, FileNotFoundError, KeyError, ValueError):
            return False
        return True

    def last_intact_champion(self) -> tuple[dict[str, Any] | None, list[int]]:
        """(the newest champion in the promotion chain whose files are intact, the damaged ones
        skipped on the way). The chain is champion.json, then each record's ``previous``."""
        record, damaged = self.champion(), []
        by_version = {d["version"]: d for d in self.deployments()}
        while record is not None:
            if self.intact(record["version"]):
                return record, damaged
            damaged.append(record["version"])
            previous = record.get("previous")
            record = by_version.get(previous) if previous is not None else None
        return None, damaged

    def manifest(self, version: int) -> dict[str, Any]:
        return self.store.read_json(f"versions/{version}/manifest.json")

    def metadata(self, version: int) -> dict[str, Any]:
        return self.store.read_json(f"versions/{version}/metadata.json")

    def load(self, version: int) -> dict[str, bytes]:
        """Every file of a version, after checking each one's sha256."""
        files = {}
        for name, entry in self.manifest(version)["files"].items():
            data = self.store.read_bytes(f"versions/{version}/{name}")
            if sha256_bytes(data) != entry["sha256"]:
                raise ChecksumError(
                    f"{self.store.uri(f'versions/{version}/{name}')}: sha256 {sha256_bytes(data)[:12]}... does not "
                    f"match the registered {entry['sha256'][:12]}...; refusing to load version {version}"
                )
            files[name] = data
        return files

    def materialise(self, version: int, local_dir: str | Path) -> Path:
        """Write a verified copy of a version into a local folder (to load models from)."""
        local_dir = Path(local_dir)
        for name, data in self.load(version).items():
            target = local_dir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return local_dir

    # --- champion ------------------------------------------------------------------------
    def champion(self) -> dict[str, Any] | None:
        return self.store.read_json_or("champion.json")

    @contextlib.contextmanager
    def _lock(self) -> Generator[None, None, None]:
        if not self.store.is_local:
            yield
            return
        os.makedirs(self.store.root, exist_ok=True)
        with open(self.store.path(".lock"), "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def promote(
        self, version: int, *, run_id: str, expected_champion: int | None, details: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Make ``version`` the champion, if the champion is still ``expected_champion``.

        The check and the switch happen under a lock, so two runs cannot both replace the
        champion they compared against."""
        if version not in self.versions():
            raise ValueError(f"version {version} is not a complete registered version")
        with self._lock():
            current = self.champion()
            current_version = current["version"] if current else None
            if current_version != expected_champion:
                raise ChampionChanged(
                    f"champion is now version {current_version}, not {expected_champion} as compared; re-evaluate"
                )
            record = {
                "version": version,
                "previous": current_version,
                "run_id": run_id,
                "deployed_at": dt.datetime.now(dt.UTC).isoformat(),
                **(details or {}),
            }
            self.store.write_json(f"deployments/{version:06d}-{safe_run_id(run_id)}.json", record)
            self.store.write_json("champion.json", record)
        return record

    def deployments(self) -> list[dict[str, Any]]:
        return [self.store.read_json(f"deployments/{n}") for n in self.store.ls("deployments") if n.endswith(".json")]
