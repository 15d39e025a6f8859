"""One generic registry, used for methods, suites and indicators.

    >>> from bench.registry import METHODS
    >>> METHODS.names()                        # imports the `methods` package: declarations only
    ['epo', 'ls', 'map', 'pareto_merging', 'phn', 'pwe_moe_epo', 'pwe_moe_ls', 'ta_grid']

A package declares its entries in its `__init__.py` (`METHODS.declare("ta_grid", "methods.ta_grid",
"one-line description")`), so listing names and descriptions imports nothing; the module is
imported the first time an entry is asked for, and registers its object with a decorator
(`@METHODS.register("ta_grid")`, with a variant's own defaults as keyword arguments). An unknown name
raises `BenchError` whose message names the bad value, a close match and every valid choice.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class BenchError(Exception):
    """A user-facing error: the CLI prints its message as one line and exits non-zero."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    description: str
    defaults: dict = field(default_factory=dict)     # this name's defaults (still options), e.g. scalarizer=epo


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str):
        self.kind, self.package = kind, package    # `package` declares (or registers) the entries
        self._declared: dict[str, tuple[str, str]] = {}    # name → (module, description)
        self._entries: dict[str, Entry[T]] = {}
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            importlib.import_module(self.package)

    def declare(self, name: str, module: str, description: str) -> None:
        """`name` lives in `module` (imported on first use); `description` is its `bench ls` line."""
        self._declared[name] = (module, description)

    def register(self, name: str, description: str = "", **defaults: Any) -> Callable[[T], T]:
        """Decorator. `defaults` are this name's own defaults over the constructor's (variants as
        entries: `pwe_moe_epo` is PWE-MoE with scalarizer=epo, still an option)."""

        def deco(obj: T) -> T:
            if name in self._entries and self._entries[name].obj is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc = (self._declared.get(name, ("", ""))[1] or description
                   or ((obj.__doc__ or "").strip().splitlines() or [""])[0])
            self._entries[name] = Entry(name, obj, doc, dict(defaults))
            return obj

        return deco

    def names(self) -> list[str]:
        self._load()
        return sorted(set(self._declared) | set(self._entries))

    def description(self, name: str) -> str:
        self._load()
        if name in self._declared:
            return self._declared[name][1]
        return self.entry(name).description

    def check(self, name: str) -> str:
        """`name` if it is a known entry (nothing imported), else a one-line BenchError."""
        self._load()
        if name not in self._declared and name not in self._entries:
            raise BenchError(unknown_choice(self.kind, name, self.names()))
        return name

    def entry(self, name: str) -> Entry[T]:
        self.check(name)
        if name not in self._entries:
            importlib.import_module(self._declared[name][0])
            if name not in self._entries:
                raise RuntimeError(f"module {self._declared[name][0]} declares {self.kind} {name!r} but does not "
                                   f"register it")
        return self._entries[name]

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def build(self, name: str, **kwargs: Any):
        e = self.entry(name)
        return e.obj(**{**e.defaults, **kwargs})

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._declared or name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        """Every entry (importing what is only declared)."""
        return iter(self.entry(n) for n in self.names())


def unknown_choice(kind: str, value: Any, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {kind} {value!r}{hint}; valid choices: {', '.join(choices)}"


METHODS: Registry = Registry("method", "methods")
SUITES: Registry = Registry("suite", "tasks")
INDICATORS: Registry = Registry("indicator", "bench.indicators")
