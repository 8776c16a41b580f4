"""Typed, nested experiment configs with YAML and dotted-string overrides.

The flow follows TF Model Garden: a registered experiment returns a config; YAML files and a
`--params_override` string (`a.b=c,d=e`) are applied on top, strictly (an unknown key is an
error, never silently ignored); `validate()` checks the result; the frozen config is written
to `model_dir/params.yaml` and every object is built from it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config value, override or file that cannot be applied."""


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, annotation: Any, path: str) -> Any:
    """Converts a YAML-parsed `value` to the field's annotated type, or raises ConfigError."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"`{path}` is a section; expected a mapping. Received: {value!r}")
        return annotation().override(value, prefix=path)
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"`{path}` expects a list. Received: {value!r}")
        args = typing.get_args(annotation)
        item_type = args[0] if args else Any
        return tuple(_coerce(v, item_type, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"`{path}` expects a mapping. Received: {value!r}")
        return dict(value)
    if annotation is Any:
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"`{path}` expects true or false. Received: {value!r}")
        return value
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation is str and isinstance(value, str):
        return value
    raise ConfigError(
        f"`{path}` expects a value of type {getattr(annotation, '__name__', annotation)}. "
        f"Received: {value!r} ({type(value).__name__})"
    )


@dataclasses.dataclass
class Config:
    """Base of every config section: dict/YAML round trip and strict overrides."""

    def as_dict(self) -> dict[str, Any]:
        def convert(value):
            if isinstance(value, Config):
                return value.as_dict()
            if isinstance(value, tuple | list):
                return [convert(v) for v in value]
            if isinstance(value, Mapping):
                return {k: convert(v) for k, v in value.items()}
            return value

        return {f.name: convert(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def override(self, values: Mapping[str, Any], prefix: str = "") -> Config:
        """Sets `values` (a nested mapping) on this config in place; returns it.

        Raises:
            ConfigError: naming the key, when a key does not exist or a value has the wrong
                type.
        """
        types_ = _field_types(type(self))
        for key, value in values.items():
            path = f"{prefix}.{key}" if prefix else key
            if key not in types_:
                raise ConfigError(
                    f"Unknown config key `{path}`. Valid keys here: {sorted(types_)}. "
                    "Check the spelling against params.yaml of a run of this experiment."
                )
            current = getattr(self, key)
            if isinstance(current, Config) and isinstance(value, Mapping):
                current.override(value, prefix=path)
            else:
                setattr(self, key, _coerce(value, types_[key], path))
        return self

    def override_from_yaml(self, path: str) -> Config:
        try:
            with open(path) as f:
                values = yaml.safe_load(f)
        except OSError as e:
            raise ConfigError(f"Cannot read config file {path!r}: {e.strerror}.") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"Config file {path!r} is not valid YAML: {e}") from e
        if values is None:
            return self
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"Config file {path!r} must hold a mapping at the top level (e.g. "
                f"`trainer: {{train_steps: 100}}`). Received: {type(values).__name__}"
            )
        return self.override(values)

    def override_from_string(self, overrides: str) -> Config:
        """Applies `a.b=c,d.e=f` (values parsed as YAML scalars or flow lists)."""
        return self.override(parse_dotted_overrides(overrides))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.as_dict(), sort_keys=False)

    def validate(self) -> None:
        """Checks cross-field constraints; subclasses extend it. Recurses into sections."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Config):
                value.validate()


def _split_top_level(text: str) -> list[str]:
    """Splits on commas that are not inside brackets or braces."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def parse_dotted_overrides(overrides: str) -> dict[str, Any]:
    """`"trainer.train_steps=10,task.model.expert_units=[8,4]"` -> a nested dict."""
    nested: dict[str, Any] = {}
    for item in _split_top_level(overrides or ""):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(
                f"Malformed override {item!r}: expected `dotted.key=value` pairs separated by "
                "commas, e.g. --params_override='trainer.train_steps=100,runtime.seed=1'."
            )
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"Cannot parse the value of override {item!r}: {e}") from e
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"Override {item!r} conflicts with an earlier one for {part!r}.")
        node[parts[-1]] = value
    return nested
