"""Registered meta-learning experiments (Omniglot and sinusoid regression).

Omniglot follows the published protocol: Vinyals et al. split (1028 train / 172 val / 423 test
characters), 28x28, rotations as new classes, Conv-4, meta-test accuracy with a 95% confidence
interval over 1000 episodes. Measured results, times and commands are in BUILD_NOTES.md
("Meta-learning"); `bench/meta_omniglot.py` and `bench/meta_sinusoid.py` reproduce them.
"""

from __future__ import annotations

from tf_mtml.configs.experiment import ExperimentConfig, OptimizerConfig, TrainerConfig
from tf_mtml.configs.meta import MetaDataConfig, MetaLearningConfig, MetaModelConfig
from tf_mtml.configs.registry import register_experiment


def _trainer(train_steps: int, learning_rate: float = 1e-3, decay_steps: int = 0,
             steps_per_loop: int = 100) -> TrainerConfig:
    return TrainerConfig(
        train_steps=train_steps, steps_per_loop=steps_per_loop,
        checkpoint_interval=10 * steps_per_loop, validation_interval=train_steps,
        optimizer=OptimizerConfig(learning_rate=learning_rate, decay_steps=decay_steps,
                                  decay_rate=0.5 if decay_steps else 1.0))


def _omniglot(algorithm: str, num_queries: int = 5, meta_batch_size: int = 32,
              **model) -> MetaLearningConfig:
    """5-way 1-shot Omniglot episodes (15 queries per class at meta-test).

    MAML-family learners loop over episodes with `map_fn`: on Conv-4 the vectorized loop
    runs the filter gradient in a while loop (second order: 8.2 vs 3.0 s per step, 2 CPUs).
    """
    if algorithm in ("maml", "fomaml", "meta_sgd", "anil"):
        model.setdefault("meta_batch_mode", "map_fn")
    return MetaLearningConfig(
        data=MetaDataConfig(num_ways=5, num_shots=1, num_queries=num_queries,
                            meta_batch_size=meta_batch_size, eval_num_queries=15,
                            eval_meta_batch_size=50),
        model=MetaModelConfig(algorithm=algorithm, **model))


def _sinusoid(algorithm: str, **model) -> MetaLearningConfig:
    """Finn et al. 2017 sinusoids: K=10 support and 10 query points, 25 tasks per meta-batch."""
    return MetaLearningConfig(
        data=MetaDataConfig(source="sinusoid", num_ways=1, num_shots=10, num_queries=10,
                            meta_batch_size=25, rotations=False, eval_meta_batch_size=100),
        model=MetaModelConfig(algorithm=algorithm, backbone="mlp", hidden_units=(40, 40),
                              **model))


@register_experiment("protonet_omniglot")
def protonet_omniglot() -> ExperimentConfig:
    """Prototypical Networks (Snell et al. 2017) on Omniglot, 1-shot.

    Trains 60-way 1-shot with 5 queries per class, one episode per step, Adam 1e-3 halved every
    2000 episodes; evaluates 5-way 1-shot with 15 queries (set `task.data.eval_num_ways=20` for
    the 20-way figure). Published: 98.8% (5-way), 96.0% (20-way).

    Command:
        python -m trainers.train --experiment=protonet_omniglot --model_dir=/tmp/protonet \\
            --mode=train_and_eval
    Expected: see BUILD_NOTES.md ("Meta-learning benchmarks") for time and accuracy on 2 CPU
    cores at the step budget used there.
    """
    config = MetaLearningConfig(
        data=MetaDataConfig(num_ways=60, num_shots=1, num_queries=5, meta_batch_size=1,
                            eval_num_ways=5, eval_num_queries=15, eval_meta_batch_size=50),
        model=MetaModelConfig(algorithm="protonet"))
    return ExperimentConfig(task=config, trainer=_trainer(20000, decay_steps=2000))


@register_experiment("maml_omniglot")
def maml_omniglot() -> ExperimentConfig:
    """MAML (Finn et al. 2017), second order, Omniglot 5-way 1-shot.

    Meta-batch 32, 1 inner step of lr 0.4 in training and 3 at meta-test, Adam 1e-3.
    Published: 98.7%.

    Command:
        python -m trainers.train --experiment=maml_omniglot --model_dir=/tmp/maml \\
            --mode=train_and_eval
    """
    return ExperimentConfig(task=_omniglot("maml", inner_lr=0.4, inner_steps=1,
                                           eval_inner_steps=3), trainer=_trainer(60000))


@register_experiment("fomaml_omniglot")
def fomaml_omniglot() -> ExperimentConfig:
    """First-order MAML: as `maml_omniglot` with the second-derivative terms dropped."""
    return ExperimentConfig(task=_omniglot("fomaml", inner_lr=0.4, inner_steps=1,
                                           eval_inner_steps=3), trainer=_trainer(60000))


@register_experiment("anil_omniglot")
def anil_omniglot() -> ExperimentConfig:
    """ANIL (Raghu et al. 2020): MAML adapting only the classifier head, Omniglot 5-way 1-shot."""
    return ExperimentConfig(task=_omniglot("anil", inner_lr=0.4, inner_steps=1,
                                           eval_inner_steps=3), trainer=_trainer(60000))


@register_experiment("reptile_omniglot")
def reptile_omniglot() -> ExperimentConfig:
    """Reptile (Nichol et al. 2018), Omniglot 5-way 1-shot: 5 SGD inner steps of lr 0.1 on
    the support set, meta-batch 5, outer SGD rate 1.0 (theta += (mean phi - theta))."""
    config = _omniglot("reptile", meta_batch_size=5, inner_lr=0.1, inner_steps=5,
                       eval_inner_steps=10)
    trainer = _trainer(100000)
    trainer.optimizer = OptimizerConfig(name="sgd", learning_rate=1.0)
    return ExperimentConfig(task=config, trainer=trainer)


@register_experiment("lstm_meta_omniglot")
def lstm_meta_omniglot() -> ExperimentConfig:
    """LSTM meta-optimizer (Ravi & Larochelle 2017), Omniglot 5-way 1-shot, 5 inner steps."""
    return ExperimentConfig(task=_omniglot("lstm_meta", meta_batch_size=8, inner_lr=0.1,
                                           inner_steps=5, filters=32),
                            trainer=_trainer(20000))


@register_experiment("matching_omniglot")
def matching_omniglot() -> ExperimentConfig:
    """Matching Networks (Vinyals et al. 2016), cosine attention, Omniglot 5-way 1-shot."""
    return ExperimentConfig(task=_omniglot("matching", distance="cosine"),
                            trainer=_trainer(20000))


@register_experiment("relationnet_omniglot")
def relationnet_omniglot() -> ExperimentConfig:
    """Relation Network (Sung et al. 2018), Omniglot 5-way 1-shot, MSE on relation scores."""
    return ExperimentConfig(task=_omniglot("relation", meta_batch_size=1, num_queries=19),
                            trainer=_trainer(50000, decay_steps=10000))


@register_experiment("siamese_omniglot")
def siamese_omniglot() -> ExperimentConfig:
    """Siamese network with the margin contrastive loss; one-shot by nearest support example."""
    return ExperimentConfig(task=_omniglot("siamese", meta_batch_size=8, margin=1.0),
                            trainer=_trainer(20000))


@register_experiment("black_box_omniglot")
def black_box_omniglot() -> ExperimentConfig:
    """A black-box learner: attention over the labelled support set predicts query labels."""
    return ExperimentConfig(task=_omniglot("black_box", meta_batch_size=16),
                            trainer=_trainer(20000))


@register_experiment("hallucination_omniglot")
def hallucination_omniglot() -> ExperimentConfig:
    """Prototypical network with a feature hallucinator (Wang et al. 2018), 2 per class."""
    return ExperimentConfig(task=_omniglot("hallucination", meta_batch_size=8,
                                           num_hallucinated=2), trainer=_trainer(20000))


@register_experiment("maml_sinusoid")
def maml_sinusoid() -> ExperimentConfig:
    """MAML on sinusoid regression (Finn et al. 2017, sec. 5.1): amplitude 0.1-5, phase 0-pi.

    MLP 40-40, K=10, meta-batch 25, one inner step of lr 0.01, Adam 1e-3, 70,000 steps in the
    paper. Meta-test MSE after 1 / 5 / 10 steps: `bench/meta_sinusoid.py`.

    Command:
        python -m trainers.train --experiment=maml_sinusoid --model_dir=/tmp/maml_sin \\
            --mode=train_and_eval
    """
    return ExperimentConfig(task=_sinusoid("maml", inner_lr=0.01, inner_steps=1),
                            trainer=_trainer(70000, steps_per_loop=500))


@register_experiment("meta_sgd_sinusoid")
def meta_sgd_sinusoid() -> ExperimentConfig:
    """Meta-SGD (Li et al. 2017) on sinusoids: per-parameter inner rates learned, init 0.01."""
    return ExperimentConfig(task=_sinusoid("meta_sgd", inner_lr=0.01, inner_steps=1),
                            trainer=_trainer(70000, steps_per_loop=500))
