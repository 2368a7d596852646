"""The code the remote jobs run: the project's own entry points, packed reproducibly.

``include/jobs/collect_and_label.py`` is the Glue job's script (with ``include/`` as an
``--extra-py-files`` zip); ``include/jobs/train.py`` is the ``sagemaker_program`` of a
``sourcedir.tar.gz`` holding it and ``include/``. The bundle is the same bytes for the same
checkout, staged content-addressed under ``<prefix>/_code/<digest>/``, so a Glue job definition
named after the digest never changes under its name.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import posixpath
import tarfile
import zipfile
from pathlib import Path

from include.lifecycle.spec import PROJECT_ROOT
from include.lifecycle.store import Store
from ml_lifecycle.aws.store import s3_uri


def _include_files() -> list[Path]:
    root = PROJECT_ROOT / "include"
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, files[name])
    return buf.getvalue()


def _targz(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(files[name]), 0, 0o644
            tf.addfile(info, io.BytesIO(files[name]))
    return gzip.compress(raw.getvalue(), mtime=0)


@functools.cache
def code_bundle() -> dict[str, bytes]:
    """The code the remote jobs run, byte-for-byte reproducible from the checkout."""
    include = {str(p.relative_to(PROJECT_ROOT)): p.read_bytes() for p in _include_files()}
    jobs = PROJECT_ROOT / "include" / "jobs"
    return {
        "collect_and_label.py": (jobs / "collect_and_label.py").read_bytes(),
        "include.zip": _zip(include),
        # script mode: the framework runs `python train.py --hp value ...` in the extracted folder,
        # so include/ next to it is importable
        "sourcedir.tar.gz": _targz({"train.py": (jobs / "train.py").read_bytes(), **include}),
    }


def code_digest() -> str:
    h = hashlib.sha256()
    for name, data in sorted(code_bundle().items()):
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:12]


def stage_code(problem: Store) -> dict[str, str]:
    """Upload the code bundle once per code version (``<prefix>/_code/<digest>/``); returns S3 URIs."""
    code = Store(problem.fs, posixpath.dirname(problem.root)).sub("_code", code_digest())
    out = {}
    for name, data in code_bundle().items():
        if not code.exists(name):
            code.write_bytes(name, data)
        out[name] = s3_uri(code, name)
    return out
