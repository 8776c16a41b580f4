"""Registered multi-task experiments."""

from __future__ import annotations

from tf_mtml.configs.experiment import ExperimentConfig, TrainerConfig
from tf_mtml.configs.multitask import MultiTaskConfig, MultiTaskModelConfig
from tf_mtml.configs.registry import register_experiment


def _synthetic_trainer() -> TrainerConfig:
    return TrainerConfig(train_steps=3000, steps_per_loop=250, checkpoint_interval=1000,
                         validation_interval=1000)


@register_experiment("mmoe_synthetic")
def mmoe_synthetic() -> ExperimentConfig:
    """MMoE on the synthetic two-task regression data of Ma et al. 2018 (sec. 3.2).

    8 experts of 16 units, one softmax gate per task, towers of 8 units; task correlation
    `task.data.correlation` (default 0.5); 16,384 training / 4,096 test examples of 100
    features; Adam 1e-3, batch 128, 3,000 steps.

    Command:
        python -m trainers.train --experiment=mmoe_synthetic --model_dir=/tmp/mmoe \\
            --mode=train_and_eval
    Expected: see BUILD_NOTES.md ("Main job") for the measured time and test MSE on 2 CPU
    cores; `bench/mmoe_synthetic.py` compares it with `shared_bottom_synthetic`.
    """
    return ExperimentConfig(task=MultiTaskConfig(), trainer=_synthetic_trainer())


@register_experiment("shared_bottom_synthetic")
def shared_bottom_synthetic() -> ExperimentConfig:
    """The Shared-Bottom baseline on the same data, with as many parameters as the MMoE.

    Command:
        python -m trainers.train --experiment=shared_bottom_synthetic --model_dir=/tmp/sb \\
            --mode=train_and_eval
    """
    return ExperimentConfig(
        task=MultiTaskConfig(model=MultiTaskModelConfig(architecture="shared_bottom")),
        trainer=_synthetic_trainer())
