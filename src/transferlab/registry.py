"""A small typed registry, in the spirit of timm's ``register_model`` / ``create_model``.

Each kind of component (datasets, backbones, methods) owns one :class:`Registry` instance.
Registration happens at import time by decorating a class or factory; lookups of unknown names
raise a :class:`~transferlab.errors.TransferlabError` that lists the valid names and the closest
match, so a typo in a config never produces a ``KeyError`` traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import TransferlabError
from .validation import closest

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def add(self, name: str, obj: T) -> T:
        return self.register(name)(obj)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            valid = sorted(self._entries)
            raise TransferlabError(
                f"unknown {self.kind} '{name}'.{closest(name, valid)} Valid {self.kind}s: {', '.join(valid)}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
