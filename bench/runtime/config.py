"""Configuration: one source for every default, validated once, at the edge.

    >>> from bench.runtime.config import compose
    >>> spec = compose(["method=ta_grid", "tasks=toy-quadratic", "method.points=5"])
    >>> spec.method.points, spec.method.mode, spec.settings.seed, spec.suite_kwargs["num_tasks"]
    (5, 'shared', 0, 2)

Every default comes from a signature: a method's or suite's typed constructor *is* its config
schema, and the run's own settings are the fields of `Settings`. Hydra composes the run config
(bench/conf/run.yaml wires the groups; `tasks/<preset>.yaml` files such as `default` extend a
suite) from nodes generated here from those signatures and stored in Hydra's ConfigStore: no
default is ever copied into a YAML file. `validate` checks a command line once, before Hydra runs
anything (override grammar, method and suite names, option keys, then types and values of every
job of a sweep), and turns every mistake into one line naming the bad value and the valid
choices.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import io
import re
import tokenize
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bench.core.registry import METHODS, SUITES, BenchError, Registry, load_plugins, unknown_choice

CONF = Path(__file__).resolve().parent.parent / "conf"
GROUPS = {"method": METHODS, "tasks": SUITES}


@dataclass(frozen=True)
class Settings:
    """The run's own settings (top-level keys of `bench run`)."""

    seed: int = 0                        # seeds the method (training, sampling); the suite has its own tasks.seed
    out: str = "results/runs"            # results root: <out>/<suite>/<method>/<run-id>/record.json
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    eval_batch_size: int | None = None   # null: 1024 on CUDA, 64 on the CPU
    threads: int | None = None           # torch intra-op threads; null: 1 for small models on the CPU, else the usable cores
    deterministic: bool | None = None    # torch deterministic algorithms; null: on for the CPU (free), off on CUDA (costs speed)
    compile: bool = False                # evaluate through torch.compile (compile time reported as cost.compile_s)
    run_id: str | None = None            # default: <time>-s<seed>-<random>
    resume: str | None = None            # true: continue the newest unfinished run of this config; or its run_id
    checkpoint_every: int = 50           # training steps between checkpoints of a run's training state
    workers: int = 1                     # Ray workers for a run's independent units (ls/epo rays, MAP design points); 1: this process
    plugins: list[str] = dataclasses.field(default_factory=list)   # modules imported first, in every process (installed entry points need none)

    def __post_init__(self):
        if self.seed < 0:
            raise BenchError(f"seed={self.seed} must be ≥ 0")
        if not str(self.out).strip():
            raise BenchError("out= is empty; give a results directory, e.g. out=results/runs")
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)):
            raise BenchError(unknown_choice("device", self.device, ["auto", "cpu", "cuda", "cuda:N"]))
        for name in ("eval_batch_size", "threads"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise BenchError(f"{name}={v} must be ≥ 1 (or null for the default)")
        for name in ("run_id", "resume"):
            v = getattr(self, name)
            if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
                raise BenchError(f"{name}={v!r} must be letters, digits, '.', '_' or '-' (it names a directory)")
        if self.resume is not None and self.resume.lower() in ("true", "false"):
            object.__setattr__(self, "resume", "true" if self.resume.lower() == "true" else None)
        if self.resume is not None and self.run_id is not None:
            raise BenchError("resume= and run_id= cannot be combined: resume=<run-id> names the run to continue")
        if self.checkpoint_every < 1:
            raise BenchError(f"checkpoint_every={self.checkpoint_every} must be ≥ 1")
        if self.workers < 1:
            raise BenchError(f"workers={self.workers} must be ≥ 1 (1: this process; N: N Ray workers)")
        if self.workers > 1 and importlib.util.find_spec("ray") is None:
            raise BenchError(f"workers={self.workers} runs on Ray, which is not installed: pip install -e '.[scale]', "
                             f"or workers=1")


# ---- schemas -----------------------------------------------------------------------------------
def schema(cls) -> dict[str, inspect.Parameter]:
    """Constructor parameters with resolved annotations (a dataclass's fields, or `__init__`'s)."""
    sig = inspect.signature(cls)
    hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else typing.get_type_hints(cls.__init__)
    return {n: p.replace(annotation=hints.get(n, p.annotation)) for n, p in sig.parameters.items()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def defaults(cls, preset: dict | None = None) -> dict[str, Any]:
    """The constructor's defaults as plain values, with a registry entry's own defaults over them
    (`pwe_moe_epo` is the PWE-MoE class with scalarizer=epo: still an option of that entry)."""
    out = {}
    fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    for name, p in schema(cls).items():
        f = fields.get(name)
        if name in (preset or {}):
            value = preset[name]
        elif f is not None and f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            value = p.default
        out[name] = _plain(list(value) if isinstance(value, tuple) else dict(value) if isinstance(value, dict) else value)
    return out


def comments(cls) -> dict[str, str]:
    """Trailing `# comments` of a constructor's parameters or a dataclass's fields, from its source
    (the option's one-line documentation for `bench ls NAME` and `bench run --help`)."""
    try:
        src = inspect.getsource(cls if dataclasses.is_dataclass(cls) else cls.__init__)
    except (OSError, TypeError):
        return {}
    names, out, line_name = set(schema(cls)), {}, None
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.NEWLINE or tok.type == tokenize.NL:
            line_name = None
        elif tok.type == tokenize.NAME and line_name is None and tok.string in names and tok.start[1] > 0:
            line_name = tok.string
        elif tok.type == tokenize.COMMENT and line_name is not None and line_name not in out:
            out[line_name] = tok.string.lstrip("#").strip()
    return out


# ---- coercion and building ---------------------------------------------------------------------
def coerce_kwargs(cls, kwargs: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Hydra's values → typed constructor arguments; unknown keys and wrong types are one line.

    >>> from typing import Literal
    >>> @dataclass
    ... class M:
    ...     mode: Literal["a", "b"] = "a"
    ...     steps: int = 10
    >>> coerce_kwargs(M, {"steps": "20"}, "method.")
    {'steps': 20}
    """
    params = schema(cls)
    out = {}
    for key, value in kwargs.items():
        if key not in params:
            raise BenchError(unknown_choice("option", f"{prefix}{key}", [f"{prefix}{k}" for k in sorted(params)]))
        out[key] = _coerce(value, params[key].annotation, f"{prefix}{key}")
    return out


def _coerce(value: Any, ann: Any, name: str) -> Any:
    value = _plain(value)
    if ann is inspect.Parameter.empty or ann is Any:
        return value
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is Literal:
        if value not in args:
            raise BenchError(unknown_choice(f"value for {name}:", value, [str(a) for a in args]))
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, name)
            except BenchError as e:
                errors.append(str(e))
        raise BenchError(errors[0] if errors else f"bad value {value!r} for {name}")
    if origin in (list, tuple) or ann in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise BenchError(f"{name}={value!r} must be a list, e.g. {name}=[0.5,0.5]")
        inner = args[0] if args else Any
        return [_coerce(v, inner, name) for v in value]
    if origin is dict or ann is dict:
        if not isinstance(value, dict):
            raise BenchError(f"{name}={value!r} must be a mapping, e.g. {name}.KEY=VALUE")
        return value
    if ann is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise BenchError(f"{name}={value!r} must be true or false")
    if ann in (int, float, str):
        if ann is int and isinstance(value, float) and not value.is_integer():
            raise BenchError(f"{name}={value!r} must be an integer")
        if ann in (int, float) and isinstance(value, bool) or value is None:
            raise BenchError(f"{name}={value!r} must be {'a number' if ann is not str else 'a string'}")
        try:
            return ann(value)
        except (TypeError, ValueError):
            raise BenchError(f"{name}={value!r} must be of type {ann.__name__}") from None
    return value


def _plain(value: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def build_from_config(registry: Registry, cfg: dict[str, Any], group: str):
    """cfg = {"name": <registry name>, **constructor kwargs} → the constructed object."""
    cfg = dict(_plain(cfg))
    if "name" not in cfg:
        raise BenchError(f"{group} config has no 'name'; valid choices: {', '.join(registry.names())}")
    entry = registry.entry(cfg.pop("name"))
    kwargs = coerce_kwargs(entry.obj, {**entry.defaults, **cfg}, f"{group}.")
    return entry.obj(**kwargs)


def settings(cfg) -> Settings:
    """The run's validated settings from a composed config."""
    top = {k: v for k, v in _plain(cfg).items() if k not in GROUPS}
    return Settings(**coerce_kwargs(Settings, top))


# ---- Hydra: generated nodes, presets, validation -------------------------------------------------
def presets(group: str) -> dict[str, str]:
    """{preset: the registry entry it extends} for the YAML files in conf/<group>/ (e.g. tasks/default)."""
    from omegaconf import OmegaConf

    out = {}
    for path in sorted((CONF / group).glob("*.yaml")):
        base = [d for d in OmegaConf.load(path).get("defaults", []) if isinstance(d, str) and d != "_self_"]
        out[path.stem] = base[0]
    return out


def default_choice(group: str) -> str:
    from omegaconf import OmegaConf

    for d in OmegaConf.load(CONF / "run.yaml").defaults:
        if isinstance(d, (dict,)) or hasattr(d, "items"):
            for k, v in dict(d).items():
                if k == group:
                    return str(v)
    raise RuntimeError(f"run.yaml selects no {group}")


def store(group: str, names: list[str]) -> None:
    """Put the generated nodes of `names` (registry entries or presets) into Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="settings", node=defaults(Settings))
    registry, extends = GROUPS[group], presets(group)
    for name in names:
        entry = registry.entry(extends.get(name, name))
        cs.store(group=group, name=entry.name, node={"name": entry.name, **defaults(entry.obj, entry.defaults)})


TEMPLATE = re.compile(r"\{[A-Za-z_]\w*\}")


def quote_templates(overrides: list[str]) -> list[str]:
    """Overrides as a user types them: a value holding a `{task}` / `{Task}` template (tasks.finetuned=/m/ft_{task})
    is quoted for Hydra, whose grammar reserves braces for dictionaries. Quoted values and lists are left as they are.

    >>> quote_templates(["tasks.finetuned=/m/ft_{task}", "tasks.names=[a,b]", "x='{task}'"])
    ["tasks.finetuned='/m/ft_{task}'", 'tasks.names=[a,b]', "x='{task}'"]
    """
    out = []
    for o in overrides:
        key, eq, value = o.partition("=")
        if eq and TEMPLATE.search(value) and value[:1] not in "'\"[{" and "'" not in value and "," not in value:
            o = f"{key}='{value}'"
        out.append(o)
    return out


def parse(overrides: list[str]):
    """Hydra's override objects, or one line quoting the override that does not parse."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    out = []
    for o in overrides:
        try:
            out.extend(parser.parse_overrides([o]))
        except OverrideParseException as e:
            why = str(e).splitlines()[0]
            raise BenchError(f"cannot read the override {o!r} ({why}); write key=value, e.g. "
                             f"'tasks.names=[digits,dots]' or method=ta_grid,map with -m") from None
    return out


def jobs(overrides: list[str]) -> list[list[str]]:
    """The override list of every job the command line asks for (one, or each job of a sweep)."""
    import itertools

    axes = []
    for o in parse(overrides):
        key = o.get_key_element()
        if o.is_sweep_override() and o.is_discrete_sweep():
            values = list(o.sweep_string_iterator())
            if o.value_type is not None and o.value_type.name == "GLOB" and o.key_or_group in GROUPS:
                values = o.value().filter(GROUPS[o.key_or_group].names())
            axes.append([f"{key}={v}" for v in values])
        elif o.is_sweep_override():
            axes.append([])                   # ranges and intervals: a sweeper plugin's business
        else:
            axes.append([f"{key}={o.get_value_element_as_str()}"])
    return [list(job) for job in itertools.product(*[a for a in axes if a])]


def check_keys(job: list[str]) -> dict[str, str]:
    """Group choices and option keys of one job against the registries and `Settings`; returns
    the chosen {group: name} (registering their nodes)."""
    chosen = {g: default_choice(g) for g in GROUPS}
    pairs = [(o.split("=", 1)[0].lstrip("+~"), o.split("=", 1)[1]) for o in job]
    for key, value in pairs:
        if key in GROUPS:
            extends = presets(key)
            if value not in extends:
                GROUPS[key].check(value)
            chosen[key] = value
    for group, name in chosen.items():
        store(group, [name])
    top = sorted([*schema(Settings), *GROUPS])
    for key, _ in pairs:
        head, _, sub = key.partition(".")
        if head == "hydra" or head.startswith("hydra/"):
            continue
        if head not in top:
            raise BenchError(unknown_choice("setting", key, top))
        if head in GROUPS and sub:
            name = presets(head).get(chosen[head], chosen[head])
            entry = GROUPS[head].entry(name)
            keys = sorted(schema(entry.obj))
            opt = sub.split(".")[0]
            if opt not in keys:
                raise BenchError(unknown_choice(f"option for {head} {name!r}:", f"{head}.{opt}",
                                                [f"{head}.{k}" for k in keys]))
    return chosen


@dataclass(frozen=True)
class RunSpec:
    """One run, composed and validated once: what `bench.runtime.run.run` executes as it is.

    The method is constructed here (a small dataclass: every value checked); the suite's arguments are typed
    here and the suite is built by the run (it loads models and data). `config` is the resolved config as the
    record stores it (and what resume compares)."""

    settings: Settings
    method_name: str
    method: Any
    suite_name: str
    suite_kwargs: dict
    config: dict
    overrides: tuple[str, ...] = ()       # the command line it was composed from (empty for a launcher's job)

    def build_suite(self):
        return SUITES.entry(self.suite_name).obj(**self.suite_kwargs)

    @property
    def yaml(self) -> str:
        from omegaconf import OmegaConf

        return OmegaConf.to_yaml(OmegaConf.create(self.config))

    def replace(self, **settings_changes: Any) -> "RunSpec":
        """The same run with other settings (e.g. resume=, run_id= of a launcher job continuing its own run)."""
        s = dataclasses.replace(self.settings, **settings_changes)
        return dataclasses.replace(self, settings=s, config={**self.config, **settings_changes})


def compose_config(overrides: list[str]):
    """Hydra's composed config of one job (keys checked before Hydra runs): the plain tree, not yet validated."""
    from hydra import compose as _compose, initialize_config_dir

    load_plugins(plugin_overrides(overrides))
    check_keys(overrides)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return _compose(config_name="run", overrides=list(overrides))


def compose(overrides: list[str]) -> RunSpec:
    """The run spec of one job, validated (keys before Hydra, types and values after)."""
    return dataclasses.replace(spec_of(compose_config(overrides)), overrides=tuple(overrides))


def spec_of(cfg) -> RunSpec:
    """A composed config (a Hydra job's, wherever a launcher runs it) → its validated RunSpec."""
    config = _plain(cfg)
    s = settings(config)
    load_plugins(s.plugins)                      # a launcher job in another process: before a name is resolved
    suite_cfg, method_cfg = dict(config["tasks"]), dict(config["method"])
    entry = SUITES.entry(suite_cfg.pop("name"))
    kwargs = coerce_kwargs(entry.obj, {**entry.defaults, **suite_cfg}, "tasks.")
    names = kwargs.get("names")
    if names is not None and len(names) < 2:
        raise BenchError(f"tasks.names={list(names)} has {len(names)} task; a Pareto front needs at least 2, "
                         f"e.g. tasks.names=[{', '.join([*names, '…'][:2])}]")
    method = build_from_config(METHODS, method_cfg, "method")
    return RunSpec(settings=s, method_name=method_cfg["name"], method=method, suite_name=entry.name,
                   suite_kwargs=kwargs, config=config)


def plugin_overrides(overrides: list[str]) -> list[str]:
    """The modules that `plugins=[...]` overrides name (imported before any name is resolved)."""
    out: list[str] = []
    given = [a for a in overrides if a.split("=", 1)[0].lstrip("+") == "plugins"]
    for o in parse(given) if given else ():
        if o.is_sweep_override():
            raise BenchError("plugins= cannot be swept; give one list, e.g. plugins=[my_pkg.methods]")
        value = o.value()
        out += [str(v) for v in (value if isinstance(value, list) else [value])]
    return out


def validate(overrides: list[str]) -> list:
    """Every job's composed config (one for a plain run), or the first mistake as one line."""
    load_plugins(plugin_overrides(overrides))
    for group in GROUPS:           # Hydra's multirun composes the defaults once before the jobs
        store(group, [default_choice(group)])
    return [compose(job) for job in jobs(overrides)]
