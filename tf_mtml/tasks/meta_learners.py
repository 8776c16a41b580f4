"""Builds the meta-learner a `MetaModelConfig` names, and the functions its export serves."""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf
from absl import logging

from tf_mtml.configs.meta import META_BATCH_MODES, MetaModelConfig
from tf_mtml.meta import (
    ANIL,
    MAML,
    BlackBoxLearner,
    HallucinatingProtoNet,
    LSTMMetaOptimizer,
    MatchingNetwork,
    MetaSGD,
    PrototypicalNetwork,
    RelationNetwork,
    Reptile,
    SiameseNetwork,
    conv4,
    conv4_classifier,
    mlp_regressor,
)
from tf_mtml.meta.base import QUERY_X, SUPPORT_X, SUPPORT_Y, MetaLearner


def _learner(config: MetaModelConfig, example_shape: tuple[int, ...], num_ways: int,
             problem: str) -> keras.Model:
    """The network adapted by the gradient-based learners: Conv-4 + head, or the sinusoid MLP."""
    if config.backbone == "mlp":
        return mlp_regressor(hidden=tuple(config.hidden_units), input_dim=example_shape[-1],
                             output_dim=1 if problem == "regression" else num_ways)
    return conv4_classifier(num_ways, input_shape=example_shape, filters=config.filters,
                            synchronized=config.batch_norm_synchronized)


def _encoder(config: MetaModelConfig, example_shape: tuple[int, ...],
             feature_maps: bool = False) -> keras.Model:
    if config.backbone == "mlp":
        layers = [keras.Input(example_shape)]
        layers += [keras.layers.Dense(units, activation="relu") for units in config.hidden_units]
        return keras.Sequential(layers, name="mlp_encoder")
    if feature_maps:
        return conv4(example_shape, filters=config.filters, pool_blocks=2, flatten=False,
                     synchronized=config.batch_norm_synchronized)
    return conv4(example_shape, filters=config.filters,
                 synchronized=config.batch_norm_synchronized)


def is_tpu_strategy(strategy: tf.distribute.Strategy) -> bool:
    """Whether `strategy` runs on TPUs (every step is then compiled by XLA)."""
    return isinstance(strategy, (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy))


def resolve_meta_batch_mode(mode: str, strategy: tf.distribute.Strategy) -> str:
    """The MAML-family `meta_batch_mode` that `task.model.meta_batch_mode=mode` selects.

    `"auto"` is `"map_fn"` under a TPU strategy (`vectorized_map` makes XLA recompile) and
    `"vectorized_map"` elsewhere (the fastest in a plain `tf.function`); an explicit mode is
    kept, with a warning when it is `"vectorized_map"` on TPUs.

    Args:
        mode: `"auto"`, `"vectorized_map"` or `"map_fn"`.
        strategy: The strategy the learner will train under.

    Returns:
        `"vectorized_map"` or `"map_fn"`.
    """
    if mode not in META_BATCH_MODES:
        raise ValueError(
            f"Received an invalid value for `meta_batch_mode`, expected one of "
            f"{META_BATCH_MODES}. Received: meta_batch_mode={mode!r}")
    on_tpu = is_tpu_strategy(strategy)
    if mode == "auto":
        return "map_fn" if on_tpu else "vectorized_map"
    if mode == "vectorized_map" and on_tpu:
        logging.warning("task.model.meta_batch_mode=vectorized_map on TPUs: XLA recompiles the "
                        "vectorized loop; `auto` (map_fn) is the TPU path.")
    return mode


def _check_xla_second_order(config: MetaModelConfig, strategy: tf.distribute.Strategy) -> None:
    """Second-order MAML through max-pooling cannot compile for TPUs in bfloat16."""
    # XLA implements MaxPoolGradGrad for float32 only (tf2xla/kernels/pooling_ops.cc).
    if (config.algorithm in ("maml", "meta_sgd") and config.backbone == "conv4"
            and is_tpu_strategy(strategy)
            and keras.mixed_precision.global_policy().compute_dtype == "bfloat16"):
        raise ValueError(
            f"`task.model.algorithm={config.algorithm}` differentiates twice through Conv-4's "
            "max-pooling, which XLA (every TPU step) compiles in float32 only, but "
            "`runtime.mixed_precision_dtype=mixed_bfloat16` computes in bfloat16. Set "
            "`runtime.mixed_precision_dtype=float32`, or use `algorithm=fomaml` or `anil`.")


def build_meta_learner(config: MetaModelConfig, example_shape: tuple[int, ...], num_ways: int,
                       eval_num_ways: int, problem: str, seed: int = 0,
                       strategy: tf.distribute.Strategy | None = None) -> MetaLearner:
    """The meta-learner of `config.algorithm` on the configured backbone.

    Args:
        config: The model section of a meta-learning experiment.
        example_shape: Shape of one example, e.g. `(28, 28, 1)` or `(1,)`.
        num_ways: Classes per training episode (head width of the gradient-based learners).
        eval_num_ways: Classes per evaluation episode (metric learners handle any N; the
            learners with a fixed head need it equal to `num_ways`).
        problem: `"classification"` or `"regression"`.
        seed: Seeds the learners with randomness of their own (hallucination noise).
        strategy: The strategy the learner will train under (resolves
            `meta_batch_mode="auto"`); by default the one whose scope is active.

    Raises:
        ValueError: Second-order MAML or Meta-SGD on Conv-4 in bfloat16 on TPUs (XLA cannot
            differentiate max-pooling twice in bfloat16).
    """
    algorithm = config.algorithm
    eval_steps = config.eval_inner_steps or None
    inner = {"inner_lr": config.inner_lr, "inner_steps": config.inner_steps,
             "eval_inner_steps": eval_steps, "problem": problem}
    if algorithm in ("maml", "fomaml", "meta_sgd", "anil"):
        strategy = strategy or tf.distribute.get_strategy()
        _check_xla_second_order(config, strategy)
        learner = _learner(config, example_shape, num_ways, problem)
        maml = {**inner, "recompute": config.recompute,
                "meta_batch_mode": resolve_meta_batch_mode(config.meta_batch_mode, strategy)}
        if algorithm == "anil":
            return ANIL(learner, num_head_layers=1, **maml)
        if algorithm == "meta_sgd":
            return MetaSGD(learner, **maml)
        return MAML(learner, first_order=algorithm == "fomaml", **maml)
    if algorithm == "reptile":
        return Reptile(_learner(config, example_shape, num_ways, problem), seed=seed, **inner)
    if algorithm == "lstm_meta":
        return LSTMMetaOptimizer(_learner(config, example_shape, num_ways, problem), **inner)
    distance = "squared_euclidean" if config.distance == "euclidean" else "cosine"
    if algorithm == "protonet":
        return PrototypicalNetwork(_encoder(config, example_shape), distance=distance)
    if algorithm == "matching":
        return MatchingNetwork(_encoder(config, example_shape))
    if algorithm == "relation":
        return RelationNetwork(_encoder(config, example_shape, feature_maps=True),
                               relation_filters=config.filters)
    if algorithm == "siamese":
        return SiameseNetwork(_encoder(config, example_shape), margin=config.margin)
    if algorithm == "hallucination":
        return HallucinatingProtoNet(_encoder(config, example_shape),
                                     num_hallucinated=config.num_hallucinated, seed=seed,
                                     distance=distance)
    if algorithm == "black_box":
        if eval_num_ways != num_ways:
            raise ValueError(
                f"The black-box learner reads one-hot labels of width {num_ways}; it cannot be "
                f"evaluated {eval_num_ways}-way. Set `task.data.eval_num_ways=0`.")
        return BlackBoxLearner(_encoder(config, example_shape),
                               num_ways=num_ways if problem == "classification" else None,
                               num_heads=config.attention_heads,
                               num_blocks=config.attention_blocks, problem=problem)
    raise ValueError(f"Unknown meta-learning algorithm {algorithm!r}.")


def _output_name(model: MetaLearner) -> str:
    return "logits" if model.problem == "classification" else "predictions"


def serving_default_fn(model: MetaLearner) -> Callable[[dict], dict]:
    """`{"x"} -> {"embeddings"}` for learners with an encoder (retrieval, caching prototypes
    client-side), else the unadapted learner's `{"logits"}` / `{"predictions"}`."""
    if hasattr(model, "encoder"):
        def embed(inputs: dict) -> dict:
            features = model.encoder(inputs["x"], training=False)
            return {"embeddings": keras.ops.reshape(features, (keras.ops.shape(features)[0], -1))}
        return embed

    # Transductive learners (MAML's default, Reptile, the LSTM meta-optimizer) run BatchNorm on
    # batch statistics and never train its moving averages, so serve them the same way.
    training = getattr(model, "transductive", True)

    def predict(inputs: dict) -> dict:
        return {_output_name(model): model.learner(inputs["x"], training=training)}
    return predict


def few_shot_fn(model: MetaLearner) -> Callable[[dict], dict]:
    """`{support_x, support_y, query_x} -> {"logits": (queries, N)}` for one served episode.

    Metric learners handle any N and K per request; gradient-based ones run their evaluation
    inner steps on the served support set; the black box reads it as one episode.
    """
    name = _output_name(model)
    if hasattr(model, "few_shot_logits"):
        def few_shot(inputs: dict) -> dict:
            return {name: model.few_shot_logits(inputs[SUPPORT_X], inputs[SUPPORT_Y],
                                                inputs[QUERY_X])}
    elif hasattr(model, "adapt_and_predict"):
        def few_shot(inputs: dict) -> dict:
            return {name: model.adapt_and_predict(inputs[SUPPORT_X], inputs[SUPPORT_Y],
                                                  inputs[QUERY_X])}
    else:
        def few_shot(inputs: dict) -> dict:
            episode = {key: tf.expand_dims(inputs[key], 0) for key in (SUPPORT_X, SUPPORT_Y,
                                                                        QUERY_X)}
            return {name: model(episode, training=False)[0]}
    return few_shot
