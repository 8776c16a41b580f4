"""The multi-task learning task family: config -> network, model, inputs, train/eval steps."""

from __future__ import annotations

import functools

import keras
import numpy as np
import tensorflow as tf

from tf_mtml.configs.multitask import MultiTaskConfig
from tf_mtml.data.multi_label import multi_label_dataset
from tf_mtml.data.synthetic import MMoESyntheticProblem
from tf_mtml.layers.mmoe import MMoE
from tf_mtml.layers.multi_head import TaskTowers
from tf_mtml.layers.shared_bottom import (
    SharedBottom,
    mmoe_param_count,
    shared_bottom_units_for_budget,
)
from tf_mtml.models.multitask_model import MultiTaskModel
from tf_mtml.models.task_spec import as_task_specs

FEATURES = "features"


class MultiTaskLearningTask:
    """Builds and steps a `MultiTaskModel` from a `MultiTaskConfig`.

    Args:
        config: The experiment's `task` section.
        seed: Seeds weight initialisation and input shuffling (`runtime.seed`).
    """

    def __init__(self, config: MultiTaskConfig, seed: int = 0):
        self.config = config
        self.seed = seed
        self.tasks = as_task_specs(config.tasks)
        self.task_output_units = {t.name: t.output_units for t in self.tasks}

    # ------------------------------------------------------------------------------ data
    @functools.cached_property
    def arrays(self) -> dict[str, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        """`{"train": (features, labels), "eval": (features, labels)}` held in memory."""
        data = self.config.data
        problem = MMoESyntheticProblem(input_dim=data.input_dim, correlation=data.correlation,
                                       sin_param_std=data.sin_param_std,
                                       seed=data.problem_seed)
        names = [t.name for t in self.tasks]
        splits = {}
        for split, size, offset in (("train", data.num_train_examples, 1),
                                    ("eval", data.num_eval_examples, 2)):
            x, labels = problem.sample(size, seed=data.problem_seed * 10 + offset)
            if len(labels) != len(names):
                raise ValueError(
                    f"Data source '{data.source}' has {len(labels)} tasks but the config names "
                    f"{len(names)}: {names}."
                )
            splits[split] = ({FEATURES: x}, dict(zip(names, labels.values(), strict=True)))
        return splits

    def input_signature(self) -> dict[str, tf.TensorSpec]:
        dim = self.config.data.input_dim
        return {FEATURES: tf.TensorSpec((None, dim), tf.float32, name=FEATURES)}

    def build_inputs(self, training: bool,
                     input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        """Per-replica batches; each input pipeline reads its own shard of the examples."""
        features, labels = self.arrays["train" if training else "eval"]
        batch_size = self.config.data.global_batch_size
        shard, num_shards = 0, 1
        if input_context is not None:
            batch_size = input_context.get_per_replica_batch_size(batch_size)
            shard, num_shards = input_context.input_pipeline_id, input_context.num_input_pipelines
        take = slice(shard, None, num_shards)
        return multi_label_dataset(
            {k: v[take] for k, v in features.items()}, {k: v[take] for k, v in labels.items()},
            batch_size=batch_size, shuffle=training, seed=self.seed + shard, repeat=training,
            drop_remainder=True)

    # ----------------------------------------------------------------------------- model
    def build_network(self) -> keras.Model:
        """The functional network `{features} -> {task: raw output}`."""
        model = self.config.model
        dim = self.config.data.input_dim
        inputs = {FEATURES: keras.Input((dim,), name=FEATURES)}
        towers = TaskTowers(self.task_output_units, tower_units=model.tower_units, name="towers")
        if model.architecture == "mmoe":
            mmoe = MMoE(num_experts=model.num_experts, expert_units=model.expert_units,
                        num_tasks=len(self.tasks), expert_dropout=model.expert_dropout,
                        task_names=[t.name for t in self.tasks], seed=self.seed, name="mmoe")
            outputs = towers(mmoe(inputs[FEATURES]))
        else:
            outputs = SharedBottom(self.task_output_units, self.bottom_units(),
                                   tower_units=model.tower_units, name="shared_bottom")(
                                       inputs[FEATURES])
        return keras.Model(inputs, outputs, name=f"{model.architecture}_network")

    def bottom_units(self) -> tuple[int, ...]:
        """The shared bottom's widths: as configured, or matched to the MMoE's parameters."""
        model = self.config.model
        if model.bottom_units:
            return tuple(model.bottom_units)
        dim = self.config.data.input_dim
        budget = mmoe_param_count(dim, model.num_experts, model.expert_units, len(self.tasks),
                                  model.tower_units, self.task_output_units)
        width = shared_bottom_units_for_budget(dim, budget, self.task_output_units,
                                               model.tower_units,
                                               num_bottom_layers=len(model.expert_units))
        return (width,) * len(model.expert_units)

    def build_model(self) -> MultiTaskModel:
        keras.utils.set_random_seed(self.seed)
        model = MultiTaskModel(self.build_network(), self.tasks,
                               weighting=self.config.model.weighting)
        if any(t.standardize for t in self.tasks):
            model.adapt_label_statistics(self.arrays["train"][1])
        return model

    def serve_fn(self, model: MultiTaskModel):
        return model.serve

    # ----------------------------------------------------------------- per-replica steps
    def train_step(self, inputs, model: MultiTaskModel, optimizer, loss_metric) -> None:
        x, y = inputs
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = model.compute_loss(x, y, y_pred, training=True)
            scaled_loss = optimizer.scale_loss(loss)
        variables = model.trainable_variables
        optimizer.apply_gradients(
            zip(tape.gradient(scaled_loss, variables), variables, strict=True))
        model.update_task_metrics(y, y_pred)
        loss_metric.update_state(loss * tf.distribute.get_replica_context().num_replicas_in_sync)

    def validation_step(self, inputs, model: MultiTaskModel, loss_metric) -> None:
        x, y = inputs
        y_pred = model(x, training=False)
        loss = model.compute_loss(x, y, y_pred, training=False)
        model.update_task_metrics(y, y_pred)
        loss_metric.update_state(loss * tf.distribute.get_replica_context().num_replicas_in_sync)
