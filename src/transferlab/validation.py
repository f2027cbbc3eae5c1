"""Readable validation messages: one line per problem, naming the key, saying what is wrong, and
suggesting the closest valid name for a typo.

The run config's schemas (:mod:`transferlab.config`), the registries (:mod:`transferlab.registry`) and
each method's own hyper-parameter model (:mod:`transferlab.methods.base`) all report problems this
way. This module sits at the bottom of the package: it imports nothing from ``transferlab`` (only the
standard library and pydantic), so any layer can use it without importing another.
"""

from __future__ import annotations

import difflib
import typing
from typing import Any

from pydantic import BaseModel, ValidationError


def closest(name: str, choices: list[str]) -> str:
    """A ' Did you mean ...?' hint for ``name`` among ``choices`` (empty when nothing is close)."""
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" Did you mean '{match[0]}'?" if match else ""


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class reached by following ``loc`` from ``model`` (None if not a model)."""
    current: Any = model
    for key in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or key not in current.model_fields:
            return None
        annotation = current.model_fields[key].annotation
        candidates = [a for a in typing.get_args(annotation) if isinstance(a, type)] or [annotation]
        current = next((a for a in candidates if isinstance(a, type) and issubclass(a, BaseModel)), annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def format_validation_error(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """Every problem of ``exc`` (raised validating ``model``) as one line ``key: what is wrong``, keys
    dotted from ``prefix`` (e.g. ``method`` for a method's hyper-parameters). An unknown key gets the
    closest valid key and the list of valid keys at its place."""
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        key = ".".join(str(part) for part in ((prefix,) if prefix else ()) + loc)
        if error["type"] == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            valid = sorted(parent.model_fields) if parent else []
            lines.append(f"{key}: unknown key.{closest(str(loc[-1]), valid)} Valid keys here: {', '.join(valid)}")
        elif error["type"] == "missing":
            lines.append(f"{key}: required but missing")
        elif error["type"] == "value_error" and isinstance(error.get("input"), dict):  # a rule across keys
            lines.append(f"{key}: {error.get('ctx', {}).get('error', error['msg'])}")
        else:
            got = error.get("input")
            lines.append(f"{key}: {error['msg']} (got {got!r})")
    return "invalid configuration:\n  " + "\n  ".join(lines)
