"""The README documents every field of the problem spec (and keeps its two commands first)."""

from __future__ import annotations

import re
import typing

from pydantic import BaseModel

from include.lifecycle.spec import PROJECT_ROOT, Spec

README = (PROJECT_ROOT / "README.md").read_text()


def _models(annotation) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation (``X``, ``X | None``, ``list[X]``, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _fields(model: type[BaseModel], prefix: str = "", row: str | None = None) -> list[tuple[str, str | None]]:
    """(dotted path, the table row that documents the items of a list) of every leaf field;
    fields that are models themselves are sections, their leaves are checked."""
    out = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{info.alias or name}"
        subs = _models(info.annotation)
        if not subs:
            out.append((path, row))
            continue
        is_list = typing.get_origin(info.annotation) is list
        for sub in subs:
            out += _fields(sub, f"{path}.", f"| `{path}[]`" if is_list else None)
    return out


def _documented(path: str, row: str | None) -> bool:
    """`a.b.c` in backticks, the `a.b.c` / `d` shorthand of a table row, or, for the items of a
    list (e.g. schema.columns[]), `leaf` in that list's table row."""
    if row is not None:
        line = next((ln for ln in README.splitlines() if ln.startswith(row)), "")
        return f"`{path.rpartition('.')[2]}`" in line
    if f"`{path}`" in README:
        return True
    parent, _, leaf = path.rpartition(".")
    return bool(parent) and re.search(rf"`{re.escape(parent)}\.[a-z_]+`( / `[a-z_]+`)* / `{leaf}`", README) is not None


def test_every_spec_field_is_in_the_readme():
    fields = _fields(Spec)
    assert len(fields) > 60
    missing = [path for path, row in fields if not _documented(path, row)]
    assert not missing, f"README.md does not document the spec fields {missing}"


def test_the_two_commands_come_first():
    head = README.splitlines()[:6]
    assert any(line.strip().startswith("make run") for line in head)
    assert any(line.strip().startswith("make test") for line in head)
