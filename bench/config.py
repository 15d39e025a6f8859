"""Config validation at the edge: Hydra's dicts → typed constructor arguments.

    >>> from typing import Literal
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class M:
    ...     mode: Literal["a", "b"] = "a"
    ...     steps: int = 10
    >>> coerce_kwargs(M, {"steps": "20"}, "method.")
    {'steps': 20}

A method's or suite's typed constructor *is* its config schema: unknown keys, wrong types and values
outside a `Literal` are rejected with one line naming the bad value and the valid choices.
"""
from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Literal

from bench.registry import BenchError, Registry, unknown_choice


def schema(cls) -> dict[str, inspect.Parameter]:
    sig = inspect.signature(cls)
    hints = typing.get_type_hints(cls.__init__) if not _is_dataclass(cls) else typing.get_type_hints(cls)
    out = {}
    for name, p in sig.parameters.items():
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
            continue
        out[name] = p.replace(annotation=hints.get(name, p.annotation))
    return out


def _is_dataclass(cls) -> bool:
    import dataclasses

    return dataclasses.is_dataclass(cls)


def coerce_kwargs(cls, kwargs: dict[str, Any], prefix: str = "") -> dict[str, Any]:
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
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
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
    if ann is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise BenchError(f"{name}={value!r} must be true or false")
    if ann in (int, float, str):
        if ann is int and isinstance(value, float) and not value.is_integer():
            raise BenchError(f"{name}={value!r} must be an integer")
        if ann in (int, float) and isinstance(value, bool):
            raise BenchError(f"{name}={value!r} must be a number")
        try:
            return ann(value)
        except (TypeError, ValueError):
            raise BenchError(f"{name}={value!r} must be of type {ann.__name__}") from None
    return value


def _plain(value: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return value


def build_from_config(registry: Registry, cfg: dict[str, Any], group: str):
    """cfg = {"name": <registry name>, **constructor kwargs} → the constructed object."""
    cfg = dict(_plain(cfg))
    if "name" not in cfg:
        raise BenchError(f"{group} config has no 'name'; valid choices: {', '.join(registry.names())}")
    entry = registry.entry(cfg.pop("name"))
    kwargs = coerce_kwargs(entry.obj, {**entry.defaults, **cfg}, f"{group}.")
    return entry.obj(**kwargs)
