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
    contrast jitter), temperature 0.5, Adam 1e-3, 500 steps (about 100 epochs).
    Evaluation, per labelled budget drawn from the train split: logistic-regression probe
    on the frozen L2-normalised embeddings and a 300-step fine-tune of the encoder with a
    new head; `eval_results.json` keys
    `probe/acc_{1,5,10}_per_class`, `finetune/acc_{1,5,10}_per_class` and
    `ood/eval_outlier_fraction` (test images flagged by the k-NN score, ~0.05 when
    calibrated). Set `task.evaluation.scratch_baseline=true` for the same fine-tune from a
    fresh initialisation.

    Limits, seen on this data: no colour to distort, so crops and contrast carry the
    signal; one in ten negatives of a batch is a same-digit image that NT-Xent pushes away;
    SimCLR trains hundreds of epochs at batch 4096, this CPU budget 100 epochs at 256 (one
    seed at 1,000 steps scored the same within noise); and on digits this small a logistic
    regression on raw pixels is already strong (see the bench).

    Command:
        python -m trainers.train --experiment=simclr_digits --model_dir=/tmp/simclr \\
            --mode=train_and_eval
    Expected (measured, `bench/contrastive_digits.py`, 3 seeds, 2 busy CPU cores): 1-1.5 min
    pretraining + 1 min evaluation; probe accuracy 74 / 90 / 90% with 1 / 5 / 10 labels per
    class, fine-tune 65 / 88 / 90%, against 40 / 68 / 72% for the same encoder trained from
    scratch on the same labels; `ood/eval_outlier_fraction` about 0.05. The training step
    itself takes ~35 ms (`bench/contrastive_throughput.py`); the seeded per-image
    augmentations of the input pipeline take most of the time.
    """
    config = ContrastiveConfig(
        data=ContrastiveDataConfig(source="digits", global_batch_size=256),
        model=ContrastiveModelConfig(filters=32, pool_blocks=3, projection_units=(128, 64),
                                     loss="nt_xent", temperature=0.5),
        evaluation=ContrastiveEvalConfig(labels_per_class=(1, 5, 10)))
    return ExperimentConfig(task=config, trainer=_trainer(500, 100, 1e-3))


@register_experiment("supcon_omniglot")
def supcon_omniglot() -> ExperimentConfig:
    """SupCon on Omniglot background characters; 5-way 1-shot nearest-prototype evaluation.

    Pretrains the 64-filter Conv-4 (28x28 -> 64-d) with a (128, 64) head on the 1,028
    "train" characters of the Vinyals et al. split with rotations as new classes, batches
    of 64 characters x 4 drawings in two views each, temperature 0.1, Adam 1e-3, 1,000
    steps. Evaluation: cosine nearest-prototype accuracy on 1,000 5-way 1-shot episodes (15
    queries per class) of the 423 "test" characters, with its 95% interval
    (`fewshot/acc_5way_1shot`, `fewshot/acc_5way_1shot_ci95`), and the share of
    test-character images that the k-NN OOD score flags (`ood/eval_outlier_fraction`).
    Data: `../shared/data/omniglot/` (or `--params_override=task.data.data_dir=...`).

    Limits: SupCon needs labels, and its positives come only from same-character drawings
    present in the batch, hence the class-balanced batches; the few-shot accuracy rests on
    the pretraining characters resembling the test ones, which also makes the OOD score
    blind to new characters of the same script family (flagged at about the calibrated
    5%); and each step costs ~2 s on 2 busy CPU cores, so the budget is far below the
    published episodic runs (Prototypical Networks: 98.8%).

    Command:
        python -m trainers.train --experiment=supcon_omniglot --model_dir=/tmp/supcon \\
            --mode=train_and_eval
    Expected (measured on 2 CPU cores shared with other jobs, load average ~8, seed 0):
    after 200 steps (`bench/contrastive_omniglot.py` default) 85.0 +- 0.6% 5-way 1-shot in
    6.8 min + 1.3 min evaluation; after 300 steps (`--train_steps=300`) 90.8 +- 0.5% in
    10.4 min; the untrained encoder scores 56.7%, raw pixels 49.5%. Accuracy was still
    rising; the 1,000-step default (about 35 min there) was not measured.
    """
    config = ContrastiveConfig(
        data=ContrastiveDataConfig(source="omniglot", global_batch_size=256,
                                   classes_per_batch=64, train_split="train",
                                   eval_split="test", rotations=True),
        model=ContrastiveModelConfig(filters=64, pool_blocks=4, projection_units=(128, 64),
                                     loss="supcon", temperature=0.1),
        evaluation=ContrastiveEvalConfig(num_ways=5, num_shots=1, num_queries=15,
                                         episodes=1000, episode_batch_size=50))
    return ExperimentConfig(task=config, trainer=_trainer(1000, 100, 1e-3))
