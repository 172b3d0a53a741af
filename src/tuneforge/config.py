"""Strict YAML config files: one loader for recipes (`recipe.py`) and monitor configs (`monitor/config.py`).

A config is a pydantic model that forbids unknown keys. Loading collects every problem at
once, each naming the dotted key and its fix: an unknown key gets the closest valid one
("did you mean 'training.epochs'?"), a key that belongs to another `kind` of a section says
which kinds have it, a wrong value says what was given. The caller raises its own error
type (`RecipeError`, `MonitorConfigError`) with the list.
"""

from __future__ import annotations

import difflib
import json
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError


def read_yaml(path: str | Path) -> tuple[Any, str | None]:
    """(parsed YAML, None) or (None, problem) for the file at `path`.

    >>> read_yaml("/nonexistent.yaml")[1]
    '/nonexistent.yaml: file not found'
    """
    p = Path(path)
    if not p.is_file():
        return None, f"{path}: file not found"
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8")), None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        return None, f"invalid YAML at {where}: {getattr(exc, 'problem', exc)}"


def set_dotted(data: dict, key: str, value: Any) -> str | None:
    """Set `a.b.c` in nested dicts (creating sections); a problem when a parent is not a section.

    >>> d = {"training": {"epochs": 3}}
    >>> set_dotted(d, "training.epochs", 1), d
    (None, {'training': {'epochs': 1}})
    >>> set_dotted({"name": "x"}, "name.y", 1)
    "'name' is not a section"
    """
    node = data
    *parents, last = key.split(".")
    for k in parents:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            return f"'{k}' is not a section"
    node[last] = value
    return None


def deep_copy(data: Any) -> Any:
    """A copy of plain YAML data (dicts, lists, scalars)."""
    return json.loads(json.dumps(data))


# ----------------------------------------------------------------------------- error messages


def union_members(annotation: Any) -> list[type[BaseModel]]:
    """The config classes of a (possibly Annotated / Optional) union annotation, or [cls] for a class."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        out += union_members(arg)
    return out


def kinds_of(cls: type[BaseModel]) -> list[str]:
    """The `kind` values a section class accepts (its discriminator literal)."""
    field = cls.model_fields.get("kind")
    return list(typing.get_args(field.annotation)) if field is not None else []


def member_for(annotation: Any, tag: str) -> type[BaseModel] | None:
    """The member of a discriminated union whose `kind` is `tag`."""
    for cls in union_members(annotation):
        if tag in kinds_of(cls):
            return cls
    return None


def _walk(root: type[BaseModel], loc: tuple) -> tuple[list[str], type[BaseModel] | None, Any]:
    """(dotted key parts without union tags, class owning the last part, that field's annotation)."""
    key: list[str] = []
    cls: type[BaseModel] | None = root
    ann: Any = None
    i = 0
    while i < len(loc):
        part = loc[i]
        if cls is None or not isinstance(part, str):
            key.append(str(part))
            i += 1
            continue
        field = cls.model_fields.get(part)
        key.append(part)
        if field is None:
            return key + [str(p) for p in loc[i + 1 :]], cls, None
        ann = field.annotation
        members = union_members(ann)
        if len(members) > 1 and i + 1 < len(loc) and member_for(ann, str(loc[i + 1])):
            cls = member_for(ann, str(loc[i + 1]))  # the tag pydantic puts in the location
            i += 2
            continue
        cls = members[0] if len(members) == 1 else None
        i += 1
    return key, cls, ann


def describe_error(root: type[BaseModel], err: dict) -> str:
    """One line for one pydantic error: the dotted key, what is wrong, and the fix."""
    loc = tuple(p for p in err["loc"] if not str(p).startswith(("function-", "literal[", "list[")))
    typ, given = err["type"], err.get("input")
    if typ == "extra_forbidden":
        parent, owner, section = _walk(root, loc[:-1])
        name, where = str(loc[-1]), ".".join(parent)
        dotted = ".".join(parent + [name])
        if owner is not None and len(union_members(section)) > 1:
            # a key of another kind of this section (e.g. strategy.r with strategy.kind=full)
            others = [k for cls in union_members(section) if name in cls.model_fields for k in kinds_of(cls)]
            if others:
                return (
                    f"{dotted}: not a setting of {where}.kind={'/'.join(kinds_of(owner))} (it applies to "
                    f"{', '.join(others)}) — remove it, or change {where}.kind"
                )
        valid = list(owner.model_fields) if owner else []
        guess = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
        hint = f"did you mean '{'.'.join(parent + guess)}'?" if guess else f"valid keys: {', '.join(valid)}"
        return f"{dotted}: unknown key — {hint}"
    key, _, ann = _walk(root, loc)
    dotted = ".".join(key) or "(top level)"
    if typ in ("union_tag_invalid", "union_tag_not_found"):
        kinds = [k for cls in union_members(ann) for k in kinds_of(cls)]
        tag = err.get("ctx", {}).get("tag", given)
        guess = difflib.get_close_matches(str(tag), kinds, n=1, cutoff=0.5)
        return f"{dotted}.kind: {tag!r} is not allowed — use one of {', '.join(kinds)}" + (
            f" (did you mean {guess[0]!r}?)" if guess else ""
        )
    if typ == "literal_error":
        return f"{dotted}: {given!r} is not allowed — {err['msg'].replace('Input should be', 'use')}"
    if typ == "value_error":  # a validator's own message already says what to do
        return f"{dotted}: {err.get('ctx', {}).get('error', err['msg'])}"
    if typ == "missing":
        return f"{dotted}: required — add it"
    return f"{dotted}: {err['msg'].lower()} (got {given!r}) — fix the value"


def problems(root: type[BaseModel], exc: ValidationError) -> list[str]:
    """Every problem of a validation error, one line per key (a union reports a key once)."""
    seen, out = set(), []
    for err in exc.errors():
        msg = describe_error(root, err)
        k = msg.split(":", 1)[0]
        if k not in seen:
            seen.add(k)
            out.append(msg)
    return out
