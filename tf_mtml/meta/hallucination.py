"""Prototypical networks whose prototypes also average features hallucinated by a generator."""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
from keras import ops

from tf_mtml.layers._validation import check_positive_int, check_units
from tf_mtml.meta.prototypical import (
    PrototypicalNetwork,
    encode_episode,
    flatten_embeddings,
    shape_list,
    support_one_hot,
)


def prototype_logits(query, prototypes, distance: str):
    """Logits `(B, Q, N)`: minus the `distance` between queries `(B, Q, D)` and prototypes."""
    if distance == "cosine":
        similarity = ops.matmul(ops.normalize(query, axis=-1),
                                ops.transpose(ops.normalize(prototypes, axis=-1), (0, 2, 1)))
        return similarity - 1.0
    return -(ops.sum(ops.square(query), axis=-1)[:, :, None]
             + ops.sum(ops.square(prototypes), axis=-1)[:, None, :]
             - 2.0 * ops.matmul(query, ops.transpose(prototypes, (0, 2, 1))))


@keras.saving.register_keras_serializable(package="tf_mtml")
class HallucinatingProtoNet(PrototypicalNetwork):
    """Prototypical network with hallucinated support features (meta-learned data augmentation).

    Wang, Girshick, Hebert & Hariharan, "Low-Shot Learning from Imaginary Data", CVPR 2018,
    https://arxiv.org/abs/1801.05401, with the prototypical classifier of Snell et al. 2017
    (`PrototypicalNetwork`, whose `prototypes` gives the means of the real features).
    A generator `G` maps `[feature of a real support example ; noise z]` to a hallucinated
    feature of the same class. For every class, `num_hallucinated` seed examples are drawn
    uniformly (with replacement) from that class's support examples; the class prototype is
    the mean of its real and hallucinated features, and the logits are minus the distances of
    the query features to the prototypes. Training end to end on the query loss sends
    gradients to `G` through the prototypes.

    Randomness: `z ~ N(0, I)` and the seed draws come from a `keras.random.SeedGenerator`
    (seeded by `seed`) in training, and at inference too unless `deterministic_inference`:
    then `z = 0` and class `c`'s `h`-th hallucination is seeded by its `(h mod K_c)`-th support
    example (support order), so predictions are a deterministic function of the episode.

    Args:
        encoder: Any Keras layer or model embedding one example (outputs are flattened to `D`).
        num_hallucinated: Hallucinated examples per class, `>= 0` (0: a plain ProtoNet).
        generator: Keras model mapping `(n, D + noise_dim)` to `(n, D)`. If None (and
            `num_hallucinated > 0`), an MLP with hidden widths `generator_units` and leaky
            ReLUs (as in the paper) and a linear `D`-wide output.
        noise_dim: Width of the noise `z`.
        generator_units: Hidden widths of the default generator.
        deterministic_inference: Whether inference uses `z = 0` and cyclic seeds.
        seed: Seed of the noise and of the seed-example draws.
        distance: `"squared_euclidean"` (the paper's) or `"cosine"`.
        num_ways: Static `N` of the training episodes (TPU), or None to infer it.
        **kwargs: `keras.Model` keyword arguments.

    Call arguments:
        episode: Dict with `support_x` `(B, N*K, *feature_shape)`, `support_y` `(B, N*K)`
            int labels in `0..N-1` (every class present) and `query_x` `(B, N*Q, ...)`.
        training: Passed to the encoder and the generator; selects random hallucination.

    Returns:
        Logits `(B, N*Q, N)` float32.

    Example:
        ```python
        encoder = keras.Sequential([keras.layers.Dense(64, "relu"), keras.layers.Dense(32)])
        learner = HallucinatingProtoNet(encoder, num_hallucinated=4, seed=0,
                                        deterministic_inference=True, num_ways=5)
        logits = learner(episode)  # (B, 5 * Q, 5)
        ```
    """

    def __init__(self, encoder: keras.layers.Layer, num_hallucinated: int = 1,
                 generator: keras.layers.Layer | None = None, noise_dim: int = 16,
                 generator_units: Sequence[int] | int = (128,),
                 deterministic_inference: bool = False, seed: int | None = None,
                 distance: str = "squared_euclidean", num_ways: int | None = None, **kwargs):
        super().__init__(encoder, distance=distance, num_ways=num_ways, **kwargs)
        if isinstance(num_hallucinated, bool) or not isinstance(num_hallucinated, int) or (
                num_hallucinated < 0):
            raise ValueError(
                "Received an invalid value for `num_hallucinated`, expected an integer >= 0 "
                "(hallucinated examples per class; 0 gives a plain prototypical network). "
                f"Received: num_hallucinated={num_hallucinated!r}"
            )
        self.num_hallucinated = num_hallucinated
        self.noise_dim = check_positive_int("noise_dim", noise_dim)
        self.generator_units = check_units("generator_units", generator_units)
        self.deterministic_inference = bool(deterministic_inference)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._default_generator = generator is None
        self.generator = generator

    def build_head(self, embedding_shape: tuple) -> None:
        dim = math.prod(embedding_shape[1:])
        if self.generator is None and self.num_hallucinated:
            self.generator = keras.Sequential(
                [keras.layers.Dense(u, "leaky_relu", dtype=self.dtype_policy)
                 for u in self.generator_units]
                + [keras.layers.Dense(dim, dtype=self.dtype_policy)], name="generator")
        if self.generator is None:
            return
        generator_input = (None, dim + self.noise_dim)
        if not self.generator.built:
            self.generator.build(generator_input)
        output_shape = tuple(self.generator.compute_output_shape(generator_input))
        if output_shape != (None, dim):
            raise ValueError(
                f"The generator must map `(n, D + noise_dim)` = {generator_input} to the "
                f"feature shape `(n, D)` = {(None, dim)}; it returns {output_shape}. Give its "
                "last layer D units, or pass generator=None for the default MLP."
            )

    def hallucinate(self, support_embeddings, support_one_hot_labels, training=None):
        """Hallucinated features `(B, N, num_hallucinated, D)` float32.

        Args:
            support_embeddings: `(B, S, D)`.
            support_one_hot_labels: `(B, S, N)` one-hot labels (`support_one_hot`).
            training: Random seeds and noise when True, or when not `deterministic_inference`.
        """
        batch, num_support, dim = shape_list(support_embeddings)
        num_ways = shape_list(support_one_hot_labels)[-1]
        shape = (batch, num_ways, self.num_hallucinated)
        labels = ops.cast(ops.argmax(support_one_hot_labels, axis=-1), "int32")
        counts = ops.cast(ops.sum(support_one_hot_labels, axis=1), "int32")[..., None]
        # Support indices grouped by class (stable within a class), and where each class starts.
        order = ops.argsort(labels * num_support + ops.arange(num_support, dtype="int32"))
        starts = ops.cumsum(counts, axis=1) - counts
        random = bool(training) or not self.deterministic_inference
        if random:
            uniform = keras.random.uniform(shape, seed=self.seed_generator)
            rank = ops.minimum(ops.cast(uniform * ops.cast(counts, "float32"), "int32"),
                               counts - 1)
        else:
            rank = ops.arange(self.num_hallucinated, dtype="int32") % counts
        index = ops.take_along_axis(order, ops.reshape(starts + rank, (batch, -1)), axis=1)
        seeds = ops.take_along_axis(ops.cast(support_embeddings, "float32"), index[..., None],
                                    axis=1)
        noise_shape = (batch, num_ways * self.num_hallucinated, self.noise_dim)
        noise = (keras.random.normal(noise_shape, seed=self.seed_generator) if random
                 else ops.zeros(noise_shape))
        inputs = ops.reshape(ops.concatenate([seeds, noise], axis=-1), (-1, dim + self.noise_dim))
        hallucinated = self.generator(inputs, training=training)
        return ops.cast(ops.reshape(hallucinated, (*shape, dim)), "float32")

    def augmented_prototypes(self, support_embeddings, support_y, num_ways=None, training=None):
        """Prototypes `(B, N, D)`: means over the real and the hallucinated features per class."""
        prototypes = self.prototypes(support_embeddings, support_y, num_ways)
        if not self.num_hallucinated:
            return prototypes
        one_hot = support_one_hot(support_y, num_ways)
        counts = ops.sum(one_hot, axis=1)[..., None]
        hallucinated = ops.sum(self.hallucinate(support_embeddings, one_hot, training), axis=2)
        return (counts * prototypes + hallucinated) / (counts + self.num_hallucinated)

    def episode_logits(self, support_x, support_y, query_x, num_ways, training=None):
        support, query = encode_episode(self.encoder, support_x, query_x, training)
        prototypes = self.augmented_prototypes(flatten_embeddings(support, 2), support_y,
                                               num_ways, training)
        return prototype_logits(flatten_embeddings(query, 2), prototypes, self.distance)

    def get_config(self) -> dict:
        generator = None if self._default_generator else self.generator
        return {**super().get_config(), "num_hallucinated": self.num_hallucinated,
                "generator": keras.saving.serialize_keras_object(generator),
                "noise_dim": self.noise_dim, "generator_units": self.generator_units,
                "deterministic_inference": self.deterministic_inference, "seed": self.seed}

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        config["generator"] = keras.saving.deserialize_keras_object(config["generator"])
        return super().from_config(config)
