"""The meta-learning task family: config -> episodes, meta-learner, train/eval steps, exports."""

from __future__ import annotations

import functools
import math

import keras
import tensorflow as tf

from tf_mtml.configs.meta import MetaLearningConfig
from tf_mtml.data.data_dir import resolve_data_dir
from tf_mtml.data.episodes import ClassIndexedData, episode_dataset
from tf_mtml.data.omniglot import load_omniglot
from tf_mtml.data.sinusoid import sinusoid_episode_dataset
from tf_mtml.meta.base import QUERY_X, SUPPORT_X, SUPPORT_Y, MetaLearner
from tf_mtml.tasks.meta_learners import build_meta_learner, few_shot_fn, serving_default_fn

EPISODE_KEYS = (SUPPORT_X, SUPPORT_Y, QUERY_X, "query_y")


def shard_meta_batches(dataset: tf.data.Dataset, global_batch_size: int,
                       input_context: tf.distribute.InputContext | None) -> tf.data.Dataset:
    """Splits each global meta-batch of episodes into this pipeline's per-replica meta-batches.

    Every input pipeline builds the same global stream (same seed) and keeps its own
    contiguous rows, one per-replica meta-batch after another, so that replica r of a step
    sees episodes `[r * b, (r + 1) * b)` of the global meta-batch: the distributed step sees
    exactly the episodes a single device would. Shapes stay static (TPU).
    """
    if input_context is None or input_context.num_replicas_in_sync == 1:
        return dataset
    per_replica = input_context.get_per_replica_batch_size(global_batch_size)
    local_replicas = input_context.num_replicas_in_sync // input_context.num_input_pipelines
    start = input_context.input_pipeline_id * local_replicas * per_replica
    rows = local_replicas * per_replica

    def take_rows(episode):
        return {k: v[start:start + rows] for k, v in episode.items()}

    return dataset.map(take_rows).unbatch().batch(per_replica, drop_remainder=True)


class MetaLearningTask:
    """Builds and steps a `MetaLearner` from a `MetaLearningConfig`.

    Args:
        config: The experiment's `task` section.
        seed: Seeds weight initialisation (`runtime.seed`); episodes are seeded by
            `task.data.episode_seed` so that every pipeline and replica sees the same stream.
    """

    def __init__(self, config: MetaLearningConfig, seed: int = 0):
        self.config = config
        self.seed = seed
        self._classes: dict[str, ClassIndexedData] = {}

    # ------------------------------------------------------------------------------ data
    @functools.cached_property
    def data_dir(self) -> str:
        return resolve_data_dir(self.config.data.data_dir or None)

    def classes(self, split: str) -> ClassIndexedData:
        """The Omniglot characters of `split`, decoded once (and cached on disk)."""
        if split not in self._classes:
            self._classes[split] = load_omniglot(self.data_dir, split,
                                                 image_size=self.config.data.image_size)
        return self._classes[split]

    def example_shape(self) -> tuple[int, ...]:
        data = self.config.data
        if data.source == "sinusoid":
            return (1,)
        return (data.image_size, data.image_size, 1)

    def _episodes(self, training: bool) -> tuple[tf.data.Dataset, int]:
        data = self.config.data
        if training:
            ways, shots, queries, batch = (data.num_ways, data.num_shots, data.num_queries,
                                           data.meta_batch_size)
            num_episodes, seed = None, data.episode_seed
        else:
            ways, shots, queries, batch = (data.eval_ways, data.eval_shots, data.eval_queries,
                                           data.eval_batch_size)
            num_episodes = math.ceil(data.eval_episodes / batch) * batch
            seed = data.episode_seed + 1_000_003  # never the training stream
        if data.source == "sinusoid":
            dataset = sinusoid_episode_dataset(shots, queries, meta_batch_size=batch, seed=seed,
                                               num_episodes=num_episodes)
            dataset = dataset.map(lambda e: {k: e[k] for k in EPISODE_KEYS})
        else:
            split = data.train_split if training else data.eval_split
            dataset = episode_dataset(self.classes(split), ways, shots, queries,
                                      meta_batch_size=batch, seed=seed,
                                      rotations=data.rotations, num_episodes=num_episodes)
        return dataset, batch

    def build_inputs(self, training: bool,
                     input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        """Meta-batches of episodes, split across replicas (see `shard_meta_batches`).

        Training streams are infinite; evaluation is a fixed set of
        `ceil(eval_episodes / eval_meta_batch) * eval_meta_batch` episodes on `eval_split`.
        """
        dataset, batch = self._episodes(training)
        dataset = shard_meta_batches(dataset, batch, input_context)
        return dataset.prefetch(tf.data.AUTOTUNE)

    # ----------------------------------------------------------------------------- model
    def build_model(self) -> MetaLearner:
        keras.utils.set_random_seed(self.seed)
        data = self.config.data
        model = build_meta_learner(self.config.model, self.example_shape(),
                                   num_ways=data.num_ways, eval_num_ways=data.eval_ways,
                                   problem="regression" if data.source == "sinusoid"
                                   else "classification", seed=self.seed)
        dataset, _ = self._episodes(training=True)
        model(next(iter(dataset.take(1))))  # builds every variable before the optimizer
        return model

    # ----------------------------------------------------------------- per-replica steps
    def train_step(self, inputs, model: MetaLearner, optimizer, loss_metric) -> None:
        replica = tf.distribute.get_replica_context()
        global_batch = self.config.data.meta_batch_size
        loss, grads, predictions = model.train_gradients(inputs, global_batch,
                                                         scale_loss=optimizer.scale_loss)
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        model.update_episode_metrics(inputs, predictions)
        loss_metric.update_state(loss * replica.num_replicas_in_sync)

    def validation_step(self, inputs, model: MetaLearner, loss_metric) -> None:
        predictions = model(inputs, training=False)
        loss_metric.update_state(tf.reduce_mean(model.episode_losses(inputs, predictions)))
        model.update_episode_metrics(inputs, predictions)

    # ---------------------------------------------------------------------------- export
    def input_signature(self) -> dict[str, tf.TensorSpec]:
        return {"x": tf.TensorSpec((None, *self.example_shape()), tf.float32)}

    def serve_fn(self, model: MetaLearner):
        """`serving_default`: embeddings (metric learners) or the unadapted learner's output."""
        return serving_default_fn(model)

    def extra_endpoints(self, model: MetaLearner) -> dict:
        """`few_shot`: adapt on a served support set, predict the served queries."""
        label = (tf.TensorSpec((None,), tf.int32) if model.problem == "classification"
                 else tf.TensorSpec((None, 1), tf.float32))
        shape = self.example_shape()
        signature = {SUPPORT_X: tf.TensorSpec((None, *shape), tf.float32), SUPPORT_Y: label,
                     QUERY_X: tf.TensorSpec((None, *shape), tf.float32)}
        return {"few_shot": (few_shot_fn(model), signature)}
