"""Config sections shared by every experiment: trainer, optimizer, runtime."""

from __future__ import annotations

import dataclasses
import math

from tf_mtml.configs.base import Config, ConfigError

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
NAN_POLICIES = ("stop", "skip")


@dataclasses.dataclass
class OptimizerConfig(Config):
    name: str = "adam"
    learning_rate: float = 1e-3
    clipnorm: float | None = None
    # Staircase exponential decay: the rate is multiplied by `decay_rate` every `decay_steps`
    # steps (0 = constant), e.g. ProtoNet's "halve every 2000 episodes".
    decay_steps: int = 0
    decay_rate: float = 1.0

    def validate(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ConfigError(
                f"Unknown optimizer `trainer.optimizer.name={self.name}`; expected one of "
                f"{OPTIMIZERS}."
            )
        if not 0 < self.learning_rate < math.inf:
            raise ConfigError(
                "Received an invalid value for `trainer.optimizer.learning_rate`, expected a "
                f"finite number > 0. Received: learning_rate={self.learning_rate}"
            )
        if self.clipnorm is not None and not 0 < self.clipnorm < math.inf:
            raise ConfigError(
                "Received an invalid value for `trainer.optimizer.clipnorm`, expected a finite "
                f"number > 0 (the largest gradient norm), or null for no clipping. Received: "
                f"clipnorm={self.clipnorm}"
            )
        if self.decay_steps < 0 or not 0 < self.decay_rate <= 1:
            raise ConfigError(
                "`trainer.optimizer.decay_steps` must be >= 0 and `decay_rate` in (0, 1]. "
                f"Received: decay_steps={self.decay_steps}, decay_rate={self.decay_rate}"
            )


@dataclasses.dataclass
class TrainerConfig(Config):
    """How long to train and how often to checkpoint, summarise and evaluate (in steps)."""

    train_steps: int = 1000
    steps_per_loop: int = 100
    checkpoint_interval: int = 500
    max_to_keep: int = 3
    validation_interval: int = 1000
    validation_steps: int = -1
    # What a step with non-finite gradients does: "stop" (raise, naming the step and the tasks)
    # or "skip" (the update is not applied; logged). Neither checkpoints non-finite weights.
    nan_policy: str = "stop"
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)

    def validate(self) -> None:
        super().validate()
        if self.nan_policy not in NAN_POLICIES:
            raise ConfigError(
                f"Unknown `trainer.nan_policy={self.nan_policy}`; expected one of {NAN_POLICIES} "
                "(stop: raise at the first non-finite step; skip: do not apply it, go on)."
            )
        if self.train_steps < 0:
            raise ConfigError(f"`trainer.train_steps` must be >= 0. Received: {self.train_steps}")
        if self.validation_steps != -1 and self.validation_steps < 1:
            raise ConfigError(
                "Received an invalid value for `trainer.validation_steps`, expected -1 (the "
                "whole evaluation set) or a positive number of batches. Received: "
                f"validation_steps={self.validation_steps}"
            )
        for name in ("steps_per_loop", "checkpoint_interval", "validation_interval",
                     "max_to_keep"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"`trainer.{name}` must be a positive integer. Received: {getattr(self, name)}"
                )
        for name in ("checkpoint_interval", "validation_interval"):
            if getattr(self, name) % self.steps_per_loop:
                raise ConfigError(
                    f"`trainer.{name}={getattr(self, name)}` must be a multiple of "
                    f"`trainer.steps_per_loop={self.steps_per_loop}` (checkpoints and evaluations "
                    "happen between compiled loops)."
                )


@dataclasses.dataclass
class RuntimeConfig(Config):
    """Where and how the computation runs."""

    strategy: str = "default"
    tpu: str = ""
    mixed_precision_dtype: str = "float32"
    seed: int = 0
    num_cpu_devices: int = 1
    # Deterministic kernels (tf.config.experimental.enable_op_determinism): a resumed run then
    # ends with the same weights as an uninterrupted one. Slower on GPU.
    deterministic: bool = False

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"Unknown `runtime.strategy={self.strategy}`; expected one of {STRATEGIES}."
            )
        if self.strategy == "tpu" and not self.tpu:
            raise ConfigError(
                "`runtime.strategy=tpu` needs the TPU's address: pass --tpu=NAME_OR_GRPC_ADDRESS "
                "(use --tpu=local on a Cloud TPU VM)."
            )
        if self.tpu and self.strategy != "tpu":
            raise ConfigError(
                f"--tpu={self.tpu!r} was given with `runtime.strategy={self.strategy}`; the two "
                "conflict. Pass --strategy=tpu, or drop --tpu."
            )
        if self.mixed_precision_dtype not in PRECISIONS:
            raise ConfigError(
                f"Unknown `runtime.mixed_precision_dtype={self.mixed_precision_dtype}`; expected "
                f"one of {PRECISIONS}."
            )
        if self.num_cpu_devices < 1:
            raise ConfigError(
                f"`runtime.num_cpu_devices` must be >= 1. Received: {self.num_cpu_devices}"
            )
        if self.seed < 0:
            raise ConfigError(
                "Received an invalid value for `runtime.seed`, expected an integer >= 0. "
                f"Received: seed={self.seed}"
            )


@dataclasses.dataclass
class ExperimentConfig(Config):
    """An experiment: what to learn (`task`), how to train it, where to run it.

    `task` is the config of the experiment's task family (multi-task, meta-learning, ...);
    its class decides which `tf_mtml.tasks` builder turns it into a model and inputs.
    """

    task: Config = dataclasses.field(default_factory=Config)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
