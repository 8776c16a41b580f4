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

import tensorflow as tf
import yaml


class ConfigError(ValueError):
    """A config value, override or file that cannot be applied."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects a key given twice in one mapping.

    Plain YAML keeps the last value silently, so a config file that sets `train_steps` twice
    would train with whichever comes last.
    """


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep=False):
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` merges; its keys may be overridden explicitly.
        key = loader.construct_object(key_node, deep=deep)
        if key in first_line:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"found the key {key!r} twice (first on line {first_line[key]}); keep one",
                key_node.start_mark)
        first_line[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                 _construct_unique_mapping)


def _load_yaml(stream) -> Any:
    return yaml.load(stream, Loader=_UniqueKeyLoader)  # A SafeLoader: no arbitrary objects.


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
            with tf.io.gfile.GFile(path) as f:  # local paths and gs://
                values = _load_yaml(f)
        except tf.errors.NotFoundError as e:
            raise ConfigError(f"Cannot read config file {path!r}: No such file or directory.") \
                from e
        except (OSError, tf.errors.OpError) as e:
            raise ConfigError(f"Cannot read config file {path!r}: {e}.") from e
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


def check_data_dir_is_read(data_dir: str, source: str, file_sources: tuple[str, ...]) -> None:
    """Raises unless `data_dir` is empty or `source` (one of the data sources) reads files.

    A data root given to a source that generates its data would be silently ignored, and the
    user would believe the run used their files.
    """
    if data_dir and source not in file_sources:
        raise ConfigError(
            f"`task.data.data_dir={data_dir!r}` (--data_dir) was given, but "
            f"`task.data.source={source}` generates its data and reads no files. Drop --data_dir "
            f"(and task.data.data_dir), or use a source that reads them: {list(file_sources)}."
        )


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
            value = _load_yaml(raw) if raw.strip() else ""
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
