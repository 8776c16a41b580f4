"""The registry of named experiments: a name -> a function returning a fresh config."""

from __future__ import annotations

from collections.abc import Callable

from tf_mtml.configs.base import ConfigError
from tf_mtml.configs.experiment import ExperimentConfig

_EXPERIMENTS: dict[str, Callable[[], ExperimentConfig]] = {}


def register_experiment(name: str):
    """Decorator registering `factory() -> ExperimentConfig` under `name`."""

    def decorator(factory: Callable[[], ExperimentConfig]):
        if name in _EXPERIMENTS:
            raise ValueError(f"Experiment {name!r} is already registered.")
        _EXPERIMENTS[name] = factory
        return factory

    return decorator


def list_experiments() -> list[str]:
    return sorted(_EXPERIMENTS)


def get_experiment(name: str) -> ExperimentConfig:
    """A fresh config of the registered experiment `name`."""
    if name not in _EXPERIMENTS:
        raise ConfigError(
            f"Unknown experiment {name!r}. Registered experiments: "
            f"{', '.join(list_experiments()) or '(none)'}."
        )
    return _EXPERIMENTS[name]()
