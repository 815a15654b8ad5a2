"""Typed dataclass configs from YAML files and `key=value` overrides, with errors that say what to fix.

A YAML file may start from others with `include: [a.yaml, ../mesh/v4-8.yaml]` (paths relative to
the file): the included mappings are merged in order, then the file's own keys on top (mappings
merge key by key; lists and scalars replace). String values may name environment variables as
`${NAME}` or `${NAME:-default}`; they are expanded after the command-line overrides are applied.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from agentjax.util.storage import as_path, is_url

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value or key is wrong; the message names the file and the dotted key."""


class ConfigSection:
    """Base of every config dataclass. `from_dict` calls `from_mapping` on the raw mapping before the fields are
    read (to accept a shorthand spelling) and `validate` on the built object; `validate` checks values only, never
    the disk: whether a file exists is checked where it is opened."""

    @classmethod
    def from_mapping(cls, data: dict, where: str) -> dict:
        """The mapping to read fields from (by default `data` itself)."""
        return data

    def validate(self) -> None:
        """Raise ConfigError naming the field when a value is out of range or settings contradict each other."""


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`, converting YAML shapes (lists, dicts) to it."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {tp}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp) or (Any, Any)
        return {_coerce(k, kt, where): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads "1e-4" as a string
        except ValueError:
            pass
    if isinstance(tp, type):
        if tp is int and isinstance(value, bool) or not isinstance(value, tp):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass `cls` from a mapping; unknown keys are errors with a spelling suggestion."""
    section = issubclass(cls, ConfigSection)
    if section:
        data = cls.from_mapping(dict(data), where)
    fields = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        here = f"{where}.{key}" if where else key
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {sorted(fields)}"
            raise ConfigError(f"{here}: unknown key{hint}")
        kwargs[key] = _coerce(value, fields[key], here)
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None
    if section:
        try:
            obj.validate()
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}" if where else str(e)) from None
    return obj


def to_dict(obj: Any) -> Any:
    """A plain mapping of a dataclass config (for logs and saved run configs)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set dotted keys from `a.b=value` strings; values are parsed as YAML (`3`, `1e-4`, `[1,2]`)."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.steps=100")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return data


INCLUDE_KEY = "include"
_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def merge(base: dict, top: dict) -> dict:
    """`top` over `base`: nested mappings merge key by key; any other value in `top` replaces."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path, _including: tuple[Path, ...] = ()) -> dict:
    """The mapping in a YAML file, with the files its `include:` names merged underneath it."""
    path = as_path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    here = path if is_url(path) else path.resolve()
    if here in _including:
        chain = " -> ".join(str(p) for p in (*_including, here))
        raise ConfigError(f"{path}: includes itself ({chain})")
    try:
        data = yaml.safe_load(path.read_bytes()) or {}  # from bytes, bytes that are not UTF-8 are a YAMLError
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    includes = data.pop(INCLUDE_KEY, [])
    includes = [includes] if isinstance(includes, str) else includes
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ConfigError(f"{path}: {INCLUDE_KEY}: expected a file name or a list of them, got {includes!r}")
    merged: dict = {}
    for name in includes:
        merged = merge(merged, read_yaml(path.parent / name, (*_including, here)))
    return merge(merged, data)


def expand_env(value: Any, where: str = "") -> Any:
    """`value` with `${NAME}` / `${NAME:-default}` in every string replaced from the environment.

    As in the shell, the default applies when NAME is unset or empty; without a default that is an
    error naming the key, so a missing path never turns into a silently wrong one.
    """
    if isinstance(value, dict):
        return {k: expand_env(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def lookup(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if os.environ.get(name):
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(f"{where}: {m.group(0)} is not set; export {name}=... or override {where}=...")

    return _ENV_VAR.sub(lookup, value)


def load(cls: type[T], path: str | Path | None, overrides: list[str] = ()) -> T:
    """Load config `cls` from a YAML file (its includes merged; defaults when `path` is None), then
    apply `key=value` overrides and expand `${VARS}`."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, list(overrides))
    try:
        return from_dict(cls, expand_env(data))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None
