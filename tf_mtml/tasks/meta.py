"""The meta-learning task family: config -> episodes, meta-learner, train/eval steps, exports."""

from __future__ import annotations

import functools
import math

import keras
import numpy as np
import tensorflow as tf

from tf_mtml.configs.meta import MetaLearningConfig
from tf_mtml.data._common import check_positive_int
from tf_mtml.data.data_dir import resolve_data_dir
from tf_mtml.data.episodes import ClassIndexedData, episode_dataset
from tf_mtml.data.omniglot import load_omniglot
from tf_mtml.data.sharding import shard_global_batches
from tf_mtml.data.sinusoid import sinusoid_episode_dataset
from tf_mtml.meta.base import QUERY_X, SUPPORT_X, SUPPORT_Y, MetaLearner
from tf_mtml.serving.export import SERVING_DEFAULT
from tf_mtml.serving.validation import (
    contiguous_labels_check,
    gate,
    id_range_check,
    same_rows_check,
    unit_interval_check,
)
from tf_mtml.tasks.meta_learners import build_meta_learner, few_shot_fn, serving_default_fn
from tf_mtml.train.nonfinite import apply_gradients

EPISODE_KEYS = (SUPPORT_X, SUPPORT_Y, QUERY_X, "query_y")
FEW_SHOT = "few_shot"


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

    def _episodes(self, training: bool, start_step: int = 0) -> tuple[tf.data.Dataset, int]:
        data = self.config.data
        first_episode = 0
        if training:
            ways, shots, queries, batch = (data.num_ways, data.num_shots, data.num_queries,
                                           data.meta_batch_size)
            num_episodes, seed = None, data.episode_seed
            first_episode = start_step * batch
        else:
            ways, shots, queries, batch = (data.eval_ways, data.eval_shots, data.eval_queries,
                                           data.eval_batch_size)
            num_episodes = math.ceil(data.eval_episodes / batch) * batch
            seed = data.episode_seed + 1_000_003  # never the training stream
        if data.source == "sinusoid":
            dataset = sinusoid_episode_dataset(shots, queries, meta_batch_size=batch, seed=seed,
                                               num_episodes=num_episodes,
                                               first_episode=first_episode)
            dataset = dataset.map(lambda e: {k: e[k] for k in EPISODE_KEYS})
        else:
            split = data.train_split if training else data.eval_split
            dataset = episode_dataset(self.classes(split), ways, shots, queries,
                                      meta_batch_size=batch, seed=seed,
                                      rotations=data.rotations, num_episodes=num_episodes,
                                      first_episode=first_episode)
        return dataset, batch

    def build_inputs(self, training: bool,
                     input_context: tf.distribute.InputContext | None = None,
                     start_step: int = 0) -> tf.data.Dataset:
        """Meta-batches of episodes, split across replicas (see `shard_global_batches`).

        Training streams are infinite and start at the meta-batch of step `start_step` (in
        O(1): episodes are indexed; how the trainer resumes); evaluation is a fixed set of
        `ceil(eval_episodes / eval_meta_batch) * eval_meta_batch` episodes on `eval_split`.
        """
        dataset, batch = self._episodes(training, start_step)
        key = "task.data.meta_batch_size" if training else "task.data.eval_meta_batch_size"
        dataset = shard_global_batches(dataset, batch, input_context, config_key=key)
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
        apply_gradients(optimizer, zip(grads, variables, strict=True), loss)
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
        """`serving_default`: embeddings (metric learners) or the unadapted learner's output.

        Omniglot images must hold intensities in `[0, 1]`, as in training.
        """
        serve = serving_default_fn(model)

        def checked(inputs: dict) -> dict:
            return serve(gate(inputs, self._image_checks(SERVING_DEFAULT, inputs, ["x"])))

        return checked

    def extra_endpoints(self, model: MetaLearner) -> dict:
        """`few_shot`: adapt on a served support set, predict the served queries.

        `support_x` and `support_y` must have as many rows. Class labels must be `0..N-1`:
        below `task.data.num_ways` for the learners with a head of that width (MAML family,
        Reptile, LSTM meta-optimizer, black box), every class present for the metric
        learners, which take any N.
        """
        label = (tf.TensorSpec((None,), tf.int32) if model.problem == "classification"
                 else tf.TensorSpec((None, 1), tf.float32))
        shape = self.example_shape()
        signature = {SUPPORT_X: tf.TensorSpec((None, *shape), tf.float32), SUPPORT_Y: label,
                     QUERY_X: tf.TensorSpec((None, *shape), tf.float32)}
        few_shot = few_shot_fn(model)

        def checked(inputs: dict) -> dict:
            checks = [same_rows_check(FEW_SHOT, inputs, [SUPPORT_X, SUPPORT_Y]),
                      *self._image_checks(FEW_SHOT, inputs, [SUPPORT_X, QUERY_X]),
                      *self._label_checks(model, inputs[SUPPORT_Y])]
            return few_shot(gate(inputs, checks))

        return {FEW_SHOT: (checked, signature)}

    def _image_checks(self, endpoint: str, inputs: dict, names: list[str]) -> list:
        if self.config.data.source == "sinusoid":
            return []
        return [unit_interval_check(endpoint, name, inputs[name]) for name in names]

    def _label_checks(self, model: MetaLearner, labels: tf.Tensor) -> list:
        if model.problem == "regression":
            return []
        if hasattr(model, "few_shot_logits"):
            return [contiguous_labels_check(FEW_SHOT, SUPPORT_Y, labels)]
        ways = self.config.data.num_ways
        return [id_range_check(FEW_SHOT, SUPPORT_Y, labels, ways,
                               f"class labels (the head of this model has N={ways} outputs)",
                               f"Relabel the support classes 0..{ways - 1}.")]

    def serving_examples(self, num: int) -> dict[str, dict[str, np.ndarray]]:
        """`{signature: inputs}` from the first evaluation episode, for the warmup file.

        `serving_default` gets `num` of its query examples, `few_shot` the whole episode.
        """
        check_positive_int("num", num)
        dataset, _ = self._episodes(training=False)
        episode = next(iter(dataset.take(1)))
        first = {key: episode[key][0].numpy() for key in (SUPPORT_X, SUPPORT_Y, QUERY_X)}
        return {SERVING_DEFAULT: {"x": first[QUERY_X][:num]}, FEW_SHOT: first}
