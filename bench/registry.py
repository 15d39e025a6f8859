"""One generic registry, used for methods, suites and indicators.

    >>> from bench.registry import METHODS
    >>> METHODS.names()            # doctest: +SKIP
    ['epo', 'ls', 'map', 'pwe_moe_epo', 'pwe_moe_ls', 'ta_grid']

Entries register themselves with a decorator; an unknown name raises `BenchError` whose
message names the bad value, a close match and every valid choice (one line).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class BenchError(Exception):
    """A user-facing error: the CLI prints its message as one line and exits non-zero."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    description: str
    defaults: dict


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str = "", **defaults: Any) -> Callable[[T], T]:
        """Decorator. `defaults` are keyword arguments bound for this name (variants as entries)."""

        def deco(obj: T) -> T:
            if name in self._entries and self._entries[name].obj is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc = description or ((obj.__doc__ or "").strip().splitlines() or [""])[0]
            self._entries[name] = Entry(name, obj, doc, dict(defaults))
            return obj

        return deco

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entry(self, name: str) -> Entry[T]:
        if name not in self._entries:
            raise BenchError(unknown_choice(self.kind, name, self.names()))
        return self._entries[name]

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def build(self, name: str, **kwargs: Any):
        e = self.entry(name)
        return e.obj(**{**e.defaults, **kwargs})

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self._entries[n] for n in self.names())


def unknown_choice(kind: str, value: Any, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {kind} {value!r}{hint}; valid choices: {', '.join(choices)}"


METHODS: Registry = Registry("method")
SUITES: Registry = Registry("suite")
INDICATORS: Registry = Registry("indicator")
