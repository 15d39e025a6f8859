"""One generic registry, used for methods, suites and indicators.

    >>> from bench.core.registry import METHODS
    >>> METHODS.names()                        # reads declarations: imports no method module
    ['epo', 'ls', 'map', 'pareto_merging', 'phn', 'pwe_moe_epo', 'pwe_moe_ls', 'ta_grid']
    >>> METHODS.entry("ta_grid").ref
    'bench.methods.ta_grid:TAGrid'

Every entry is declared once, as a lazy `module:object` reference (lm-evaluation-harness's pattern):
the module is imported the first time the entry is asked for. Entries come from three places:

- this project: `methods/__init__.py`, `tasks/__init__.py` (bench.methods, bench.tasks) declare theirs
  (`METHODS.declare("ta_grid", "bench.methods.ta_grid:TAGrid", "one-line description")`,
  with a variant's own defaults as keyword arguments: `pwe_moe_epo` is PWE-MoE with scalarizer=epo);
- installed packages, through the entry-point groups `paretobench.methods`, `paretobench.suites`
  and `paretobench.indicators` (`ties_grid = "my_pkg.ties:TiesGrid"` in the package's pyproject);
- modules named by `plugins=[pkg, ...]` (or the environment variable PARETOBENCH_PLUGINS), which
  register their objects when imported (`@bench.api.register_method("name")`).

Plugins are loaded before any name is resolved, in every process the harness starts (Ray workers,
the leaderboard's workers, Hydra launcher jobs: the run's config and a worker's setup carry the
list). Every entry knows the plugin it came from (`Entry.source`: distribution or module, and its
version), which the record states. Mistakes are one-line `BenchError`s naming the bad value: an
unknown name (with a close match and every valid choice), a plugin that does not import, an entry
point naming a missing object, two plugins registering one name.
"""
from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

T = TypeVar("T")
PLUGINS_ENV = "PARETOBENCH_PLUGINS"      # comma-separated modules imported as plugins= in every process
BUILTIN = "paretobench"                  # the source of this project's own entries


class BenchError(Exception):
    """A user-facing error: the CLI prints its message as one line and exits non-zero."""


@dataclass(frozen=True)
class Source:
    """Where an entry comes from: this project, an installed distribution (entry point) or a plugins= module."""

    name: str
    version: str = ""
    kind: str = "builtin"          # builtin | entry_point | module

    def describe(self) -> str:
        return f"{self.name} {self.version}".strip()


@dataclass
class Entry(Generic[T]):
    name: str
    ref: str                       # "module:object" (for an object registered by a decorator: where it was defined)
    description: str
    source: Source
    defaults: dict = field(default_factory=dict)     # this name's defaults (still options), e.g. scalarizer=epo
    _obj: Any = None

    @property
    def obj(self) -> T:
        """The object, imported on first use."""
        if self._obj is None:
            self._obj = _resolve(self.ref, self.name, self.source)
        return self._obj

    @property
    def plugin(self) -> bool:
        return self.source.kind != "builtin"


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str, group: str):
        # `package` declares this project's entries; `group` is the entry-point group of installed plugins
        self.kind, self.package, self.group = kind, package, group
        self._entries: dict[str, Entry[T]] = {}
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            importlib.import_module(self.package)
            for ep in _entry_points(self.group):
                dist = getattr(ep, "dist", None)
                source = Source(dist.name if dist else ep.value.split(":")[0], dist.version if dist else "",
                                "entry_point")
                self._add(Entry(ep.name, ep.value, "", source))
            load_plugins(os.environ.get(PLUGINS_ENV, "").split(","))

    def _add(self, entry: Entry[T]) -> None:
        old = self._entries.get(entry.name)
        if old is not None and _module(old.ref) == _module(entry.ref):
            # one declaration seen twice: an entry point to an object that registers itself when its module is
            # imported (e.g. an @indicator function), or a module imported again; the entry point names the source
            old._obj = entry._obj if entry._obj is not None else old._obj
            old.description = old.description or entry.description
            old.defaults = old.defaults or entry.defaults
            return
        if old is not None:
            raise BenchError(f"{self.kind} {entry.name!r} is registered twice: by {_where(old)} and by "
                             f"{_where(entry)}; uninstall one or rename its entry")
        self._entries[entry.name] = entry

    def declare(self, name: str, ref: str, description: str, **defaults: Any) -> None:
        """This project's entry `name` is `ref` ("module:object", imported on first use); `description` is
        its `bench ls` line; `defaults` are its own defaults over the constructor's."""
        self._add(Entry(name, ref, description, Source(BUILTIN, _version(), "builtin"), dict(defaults)))

    def register(self, name: str, description: str = "", **defaults: Any) -> Callable[[T], T]:
        """Decorator for code outside this project (a plugins= module): registers `obj` under `name`."""

        def deco(obj: T) -> T:
            self.add(name, obj, description, **defaults)
            return obj

        return deco

    def add(self, name: str, obj: T, description: str = "", *, module: str | None = None, qualname: str | None = None,
            **defaults: Any) -> None:
        """Register `obj` (defined in `module`, default its own) under `name`, now."""
        module = module or getattr(obj, "__module__", None) or type(obj).__module__
        ref = f"{module}:{qualname or getattr(obj, '__qualname__', name)}"
        self._add(Entry(name, ref, description or _first_line(obj), _module_source(module), dict(defaults), obj))

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def description(self, name: str) -> str:
        e = self.entry(name)
        if not e.description:
            e.description = _first_line(e.obj)
        return e.description

    def check(self, name: str) -> str:
        """`name` if it is a known entry (nothing imported), else a one-line BenchError."""
        self._load()
        if name not in self._entries:
            raise BenchError(unknown_choice(self.kind, name, self.names()))
        return name

    def entry(self, name: str) -> Entry[T]:
        self.check(name)
        return self._entries[name]

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def build(self, name: str, **kwargs: Any):
        e = self.entry(name)
        return e.obj(**{**e.defaults, **kwargs})

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self.entry(n) for n in self.names())


def unknown_choice(kind: str, value: Any, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {kind} {value!r}{hint}; valid choices: {', '.join(choices)}"


METHODS: Registry = Registry("method", "bench.methods", "paretobench.methods")
SUITES: Registry = Registry("suite", "bench.tasks", "paretobench.suites")
INDICATORS: Registry = Registry("indicator", "bench.core.indicators", "paretobench.indicators")
REGISTRIES = (METHODS, SUITES, INDICATORS)


# ---- plugins ------------------------------------------------------------------------------------------
_PLUGINS: dict[str, Source] = {}      # plugins= modules imported in this process


def load_plugins(modules: Iterable[str]) -> list[str]:
    """Import each plugins= module once (they register their entries); returns the names given.
    A module that does not import is one line naming it and the import error's first line."""
    names = [m.strip() for m in modules if m and m.strip()]
    for module in names:
        if module in _PLUGINS:
            continue
        for r in REGISTRIES:         # this project's and installed entries first, so clashes name both sides
            r._load()
        try:
            importlib.import_module(module)
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0]
            raise BenchError(f"plugin {module!r} does not import: {type(e).__name__}: {first}") from None
        _PLUGINS[module] = _module_source(module)
        os.environ[PLUGINS_ENV] = ",".join(_PLUGINS)      # every process started from here imports them too
    return names


def plugins_used(entries: Iterable[Entry]) -> list[dict[str, str]]:
    """What a record states: every plugins= module loaded here, and the plugin behind each entry used."""
    seen: dict[str, Source] = {s.name: s for s in _PLUGINS.values()}
    for e in entries:
        if e.plugin:
            seen.setdefault(e.source.name, e.source)
    return [{"name": s.name, "version": s.version, "kind": s.kind} for s in sorted(seen.values(), key=lambda s: s.name)]


def _entry_points(group: str) -> list:
    """Every distribution's entry points in `group`. Not `importlib.metadata.entry_points(group=)`: it keeps
    one entry point per name, so a second plugin claiming a name would silently lose instead of being named."""
    import re
    from importlib.metadata import distributions

    seen, out = set(), []
    for dist in distributions():
        name = re.sub(r"[-_.]+", "-", (dist.metadata["Name"] or "")).lower()
        if name in seen:                  # the same distribution found twice on sys.path: the first wins
            continue
        seen.add(name)
        out += [ep for ep in dist.entry_points if ep.group == group]
    return sorted(out, key=lambda ep: (ep.name, ep.value))


def _resolve(ref: str, name: str, source: Source) -> Any:
    module, _, attr = ref.partition(":")
    where = "" if source.kind == "builtin" else f" (plugin {source.describe()})"
    try:
        obj = importlib.import_module(module)
    except ImportError as e:
        if source.kind == "builtin":
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        raise BenchError(f"{name!r} = {ref!r}{where}: module {module!r} does not import: {type(e).__name__}: "
                         f"{first}") from None
    for part in filter(None, attr.split(".")):
        if not hasattr(obj, part):
            raise BenchError(f"{name!r} = {ref!r}{where}: module {module!r} has no object {attr!r}")
        obj = getattr(obj, part)
    return obj


def _module_source(module: str) -> Source:
    """The distribution that installs `module` (name, version), else the module itself."""
    from importlib.metadata import packages_distributions, version

    top = module.split(".")[0]
    if top == "bench":
        return Source(BUILTIN, _version(), "builtin")
    dists = packages_distributions().get(top, [])
    if dists:
        return Source(dists[0], version(dists[0]), "module")
    mod = importlib.import_module(top)
    return Source(top, str(getattr(mod, "__version__", "")), "module")


def _module(ref: str) -> str:
    return ref.partition(":")[0]


def _where(e: Entry) -> str:
    return f"{e.source.describe()} ({e.ref})" if e.source.kind != "builtin" else f"paretobench ({e.ref})"


def _first_line(obj: Any) -> str:
    return ((getattr(obj, "__doc__", None) or "").strip().splitlines() or [""])[0]


def _version() -> str:
    """This harness's version, from its installed metadata (a Ray or joblib worker started in a directory holding
    a folder named bench/ may see `bench` as that namespace folder, without bench/__init__.py's attributes)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pareto-merge-bench")
    except PackageNotFoundError:
        return "unknown"
