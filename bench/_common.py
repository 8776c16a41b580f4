"""What every benchmark report records about the machine it ran on."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform

import keras
import tensorflow as tf


def machine_info(with_torch: bool = False) -> dict:
    """CPU model and cores, load average, versions and date (UTC), JSON-ready.

    Args:
        with_torch: Also record the PyTorch version and its thread count (benches that time a
            PyTorch peer).

    Returns:
        A dict for the report's `machine` entry.
    """
    cpu_model = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu_model = names[0] if names else cpu_model
    info = {"cpu_model": cpu_model, "cpu_count": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)),
            "load_average_at_start": os.getloadavg(), "platform": platform.platform(),
            "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    if with_torch:
        import torch

        info.update(torch=torch.__version__, torch_num_threads=torch.get_num_threads())
    return info


def seed_config(experiment: str, seed: int, task_overrides: dict,
                train_steps: int | None = None, overrides: str = ""):
    """The validated config of `experiment` for one bench seed.

    Args:
        experiment: A registered experiment name.
        seed: Sets `runtime.seed`.
        task_overrides: Nested `task` overrides for this seed (e.g. an evaluation seed).
        train_steps: If given, the run length; the loop, checkpoint and validation intervals
            follow it (one checkpoint and one evaluation, at the end).
        overrides: `--params_override`-style overrides, applied last.

    Returns:
        The `ExperimentConfig`.
    """
    from tf_mtml.configs.registry import get_experiment

    config = get_experiment(experiment)
    config.override({"runtime": {"seed": seed}, "task": task_overrides})
    if train_steps is not None:
        config.override({"trainer": {"train_steps": train_steps,
                                     "steps_per_loop": min(train_steps, 100),
                                     "checkpoint_interval": train_steps,
                                     "validation_interval": train_steps}})
    config.override_from_string(overrides)
    config.validate()
    return config
