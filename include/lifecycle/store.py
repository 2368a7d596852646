"""The artifact store: atomic reads and writes of Parquet, JSON and bytes on any fsspec filesystem.

The store never imports airflow. Inside Airflow the plugins resolve the root through
``ObjectStoragePath`` (which holds the connection's credentials) and hand its ``fs`` and
``path`` to :class:`Store`; Glue and SageMaker jobs build the same store from a URI.
Writes are atomic: a local file is written under a temporary name and renamed into place;
an object-store PUT is atomic by itself. Nothing is ever appended or patched in place.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

if TYPE_CHECKING:  # pandas and pyarrow load on the first Parquet read or write, not when a DAG file is parsed
    import pandas as pd
    import pyarrow as pa

_RUN_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def safe_run_id(run_id: str) -> str:
    """A run id as a single path segment: ``manual__2026-11-01T00:00:00+00:00`` -> ``manual__2026-11-01T00_00_00_00_00``."""
    # leading/trailing dots go too: "." and ".." are not folders of their own, ".x" is hidden (skipped as a temp file)
    return _RUN_ID_UNSAFE.sub("_", run_id).strip("_.") or "run"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if isinstance(obj, set):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=False)


def _write_local_atomically(target: str, write: Callable[[str], None]) -> None:
    """``write(tmp)`` a temporary file next to ``target``, then rename it into place.

    A failed write leaves neither a half-written target nor a stray temp file."""
    os.makedirs(posixpath.dirname(target), exist_ok=True)
    tmp = posixpath.join(posixpath.dirname(target), f".{posixpath.basename(target)}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class Store:
    """A rooted view of one filesystem; every path argument is relative to the root."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")

    @classmethod
    def from_uri(cls, uri: str, **storage_options: Any) -> Store:
        fs, root = fsspec.core.url_to_fs(uri, **storage_options)
        return cls(fs, root)

    # --- paths -------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *[p.strip("/") for p in parts if p])

    def uri(self, *parts: str) -> str:
        """A full URI for people and XCom (``file:///...`` or ``s3://bucket/...``)."""
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return f"{protocol}://{self.path(*parts)}" if protocol != "file" else f"file://{self.path(*parts)}"

    def sub(self, *parts: str) -> Store:
        return Store(self.fs, self.path(*parts))

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self.path(*parts))

    def ls(self, *parts: str) -> list[str]:
        """Names (not paths) directly under a prefix; empty when it does not exist."""
        p = self.path(*parts)
        if not self.fs.exists(p):
            return []
        return sorted(posixpath.basename(x.rstrip("/")) for x in self.fs.ls(p, detail=False))

    # --- bytes ---------------------------------------------------------------------------
    def write_bytes(self, rel: str, data: bytes) -> str:
        target = self.path(rel)
        if self.is_local:

            def write(tmp: str) -> None:
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())

            _write_local_atomically(target, write)
        else:
            self.fs.pipe_file(target, data)
        return target

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.path(rel))

    def write_text(self, rel: str, text: str) -> str:
        return self.write_bytes(rel, text.encode())

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode()

    def write_json(self, rel: str, obj: Any) -> str:
        return self.write_bytes(rel, to_json(obj).encode())

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def read_json_or(self, rel: str, default: Any = None) -> Any:
        return self.read_json(rel) if self.exists(rel) else default

    def copy_in(self, local_path: str, rel: str) -> str:
        with open(local_path, "rb") as fh:
            return self.write_bytes(rel, fh.read())

    def download(self, rel: str, local_path: str) -> str:
        os.makedirs(os.path.dirname(local_path) or ".", exist_ok=True)
        with open(local_path, "wb") as fh:
            fh.write(self.read_bytes(rel))
        return local_path

    # --- parquet -------------------------------------------------------------------------
    def write_parquet(self, rel: str, df: pd.DataFrame | pa.Table) -> str:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
        # dictionary pages pay off for text and codes, not for measured floats (features, amounts)
        options = {
            "compression": "zstd",
            "use_dictionary": [f.name for f in table.schema if not pa.types.is_floating(f.type)],
        }
        target = self.path(rel)
        if self.is_local:
            _write_local_atomically(target, lambda tmp: pq.write_table(table, tmp, **options))
        else:
            buf = io.BytesIO()
            pq.write_table(table, buf, **options)
            self.fs.pipe_file(target, buf.getvalue())
        return target

    def read_parquet(self, rel: str | Iterable[str], columns: list[str] | None = None) -> pd.DataFrame:
        rels = [rel] if isinstance(rel, str) else list(rel)
        return tables_to_pandas([self.read_table(r, columns) for r in rels])

    def read_table(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        """One Parquet file as an Arrow table (only ``columns`` when given)."""
        import pyarrow.parquet as pq

        # a local file is read by Arrow itself (no Python file object in between, no GIL held)
        return pq.read_table(self.path(rel), columns=columns, filesystem=None if self.is_local else self.fs)

    def parquet_columns(self, rel: str) -> list[str]:
        """The column names of one Parquet file, from its footer (no data read)."""
        import pyarrow.parquet as pq

        return list(pq.read_schema(self.path(rel), filesystem=None if self.is_local else self.fs).names)

    # --- listing, content identity, removal (helpers of the ETL's input accounting) ----------
    def entries(self, *parts: str) -> list[tuple[str, bool]]:
        """``(name, is_folder)`` of everything directly under a prefix, by name; empty when it does not exist."""
        p = self.path(*parts)
        if not self.fs.exists(p):
            return []
        out = []
        for info in self.fs.ls(p, detail=True):
            name = posixpath.basename(str(info["name"]).rstrip("/"))
            out.append((name, info.get("type") == "directory"))
        return sorted(out)

    def content_id(self, rel: str, data: bytes | None = None) -> str:
        """What identifies the content of one file: ``sha256:<hex>`` of its bytes (``data`` when the
        caller has read them already); on an object store whose metadata gives an ETag (S3) or a
        version id, that (``etag:...`` / ``version:...``), so a file is not downloaded only to be
        recognised. A change of the bytes changes the id, whatever the name, size or time."""
        if not self.is_local and data is None:
            info = self.fs.info(self.path(rel))
            for field, tag in (("ETag", "etag"), ("etag", "etag"), ("VersionId", "version")):
                value = info.get(field)
                if value:
                    return f"{tag}:{str(value).strip(chr(34))}"
        if data is not None:
            return f"sha256:{sha256_bytes(data)}"
        with self.fs.open(self.path(rel), "rb") as fh:
            return f"sha256:{hashlib.file_digest(fh, 'sha256').hexdigest()}"

    def remove(self, rel: str) -> bool:
        """Delete one file if it exists; True when there was one."""
        target = self.path(rel)
        if not self.fs.exists(target):
            return False
        self.fs.rm_file(target)
        return True


def concat_tables(tables: list[pa.Table]) -> pa.Table:
    """Arrow tables (e.g. the partitions of a data set) as one table, columns unified by name."""
    import pyarrow as pa

    if not tables:
        raise FileNotFoundError("no parquet files to read")
    return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]


def tables_to_pandas(tables: list[pa.Table]) -> pd.DataFrame:
    """Arrow tables (e.g. the partitions of a data set) as one DataFrame, columns unified by name."""
    return concat_tables(tables).to_pandas()
