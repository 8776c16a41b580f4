"""Registered contrastive learning experiments: SimCLR on digits, SupCon on Omniglot.

Measured results, times and commands come from `bench/contrastive_digits.py` and
`bench/contrastive_omniglot.py`; training throughput against PyTorch from
`bench/contrastive_throughput.py`.
"""

from __future__ import annotations

from tf_mtml.configs.contrastive import (
    ContrastiveConfig,
    ContrastiveDataConfig,
    ContrastiveEvalConfig,
    ContrastiveModelConfig,
)
from tf_mtml.configs.experiment import ExperimentConfig, OptimizerConfig, TrainerConfig
from tf_mtml.configs.registry import register_experiment


def _trainer(train_steps: int, steps_per_loop: int, learning_rate: float) -> TrainerConfig:
    return TrainerConfig(train_steps=train_steps, steps_per_loop=steps_per_loop,
                         checkpoint_interval=train_steps, validation_interval=train_steps,
                         optimizer=OptimizerConfig(learning_rate=learning_rate))


@register_experiment("simclr_digits")
def simclr_digits() -> ExperimentConfig:
    """SimCLR (NT-Xent) on scikit-learn's 8x8 digits, then probes with 1 / 5 / 10 labels.

    Pretrains a Conv-4 (32 filters, 3 pools: 8x8 -> 32-d) with a (128, 64) projection head
    on the 1,258 train images without labels (30% of each class held out with seed 0),
    batch 256 in two views (random resized crop of 50-100% of the area, brightness /
    contrast jitter), temperature 0.2, Adam 1e-3. Evaluation, per labelled budget drawn
    from the train split: logistic-regression probe on the frozen L2-normalised embeddings
    and a 300-step fine-tune of the encoder with a new head; `eval_results.json` keys
    `probe/acc_{1,5,10}_per_class`, `finetune/acc_{1,5,10}_per_class` and
    `ood/eval_outlier_fraction` (test images flagged by the k-NN score, ~0.05 when
    calibrated). Set `task.evaluation.scratch_baseline=true` for the same fine-tune from a
    fresh initialisation.

    Limits, seen on this data: no colour to distort, so crops and contrast carry the
    signal; one in ten negatives of a batch is a same-digit image that NT-Xent pushes away;
    the few thousand steps of a CPU budget are far from SimCLR's hundreds of epochs at
    batch 4096, and accuracy still grows with steps.

    Command:
        python -m trainers.train --experiment=simclr_digits --model_dir=/tmp/simclr \\
            --mode=train_and_eval
    Expected: see `bench/contrastive_digits.py` (its docstring carries the measured
    runtime and accuracies of this config over 3 seeds).
    """
    config = ContrastiveConfig(
        data=ContrastiveDataConfig(source="digits", global_batch_size=256),
        model=ContrastiveModelConfig(filters=32, pool_blocks=3, projection_units=(128, 64),
                                     loss="nt_xent", temperature=0.2),
        evaluation=ContrastiveEvalConfig(labels_per_class=(1, 5, 10)))
    return ExperimentConfig(task=config, trainer=_trainer(1000, 100, 1e-3))


@register_experiment("supcon_omniglot")
def supcon_omniglot() -> ExperimentConfig:
    """SupCon on Omniglot background characters; 5-way 1-shot nearest-prototype evaluation.

    Pretrains the 64-filter Conv-4 (28x28 -> 64-d) with a (128, 64) head on the 1,028
    "train" characters of the Vinyals et al. split with rotations as new classes, batches
    of 64 characters x 4 drawings in two views each, temperature 0.1, Adam 1e-3. Evaluation:
    cosine nearest-prototype accuracy on 1,000 5-way 1-shot episodes (15 queries per
    class) of the 423 "test" characters, with its 95% interval (`fewshot/acc_5way_1shot`,
    `fewshot/acc_5way_1shot_ci95`), and the share of test-character images that the k-NN
    OOD score flags (`ood/eval_outlier_fraction`: these characters were never seen).
    Data: `../shared/data/omniglot/` (or `--params_override=task.data.data_dir=...`).

    Limits: SupCon needs labels, and its positives come only from same-character
    drawings present in the batch, hence the class-balanced batches; the few-shot
    accuracy rests on the pretraining classes resembling the test ones.

    Command:
        python -m trainers.train --experiment=supcon_omniglot --model_dir=/tmp/supcon \\
            --mode=train_and_eval
    Expected: see `bench/contrastive_omniglot.py` (measured runtime and accuracy).
    """
    config = ContrastiveConfig(
        data=ContrastiveDataConfig(source="omniglot", global_batch_size=256,
                                   classes_per_batch=64, train_split="train",
                                   eval_split="test", rotations=True),
        model=ContrastiveModelConfig(filters=64, pool_blocks=4, projection_units=(128, 64),
                                     loss="supcon", temperature=0.1),
        evaluation=ContrastiveEvalConfig(num_ways=5, num_shots=1, num_queries=15,
                                         episodes=1000, episode_batch_size=50))
    return ExperimentConfig(task=config, trainer=_trainer(2000, 100, 1e-3))
