"""The multi-task learning task family: config -> network, model, inputs, train/eval steps."""

from __future__ import annotations

import functools

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_mtml.configs.multitask import MultiTaskConfig
from tf_mtml.data._common import check_positive_int
from tf_mtml.data.census import load_census_income
from tf_mtml.data.data_dir import resolve_data_dir
from tf_mtml.data.multi_label import multi_label_dataset
from tf_mtml.data.sharding import shard_global_batches
from tf_mtml.data.synthetic import MMoESyntheticProblem
from tf_mtml.layers.cross_stitch import CrossStitchNetwork
from tf_mtml.layers.gate_statistics import expert_utilisation_warnings
from tf_mtml.layers.mmoe import MMoE
from tf_mtml.layers.multi_head import TaskTowers
from tf_mtml.layers.ple import CGC, PLE
from tf_mtml.layers.shared_bottom import (
    SharedBottom,
    mmoe_param_count,
    shared_bottom_units_for_budget,
)
from tf_mtml.layers.soft_sharing import SoftSharing
from tf_mtml.models.multitask_model import MultiTaskModel
from tf_mtml.models.task_spec import as_task_specs
from tf_mtml.serving.export import SERVING_DEFAULT
from tf_mtml.serving.task_score import task_score_endpoint, task_score_examples
from tf_mtml.weighting.diagnostics import GradientDiagnostics
from tf_mtml.weighting.factory import get_weighting
from tf_mtml.weighting.train_step import multitask_train_step

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
        """`{"train": (features, labels), "eval": (features, labels)}` held in memory.

        The census source adds `"test"`; its `"eval"` is the validation split.
        """
        data = self.config.data
        if data.source == "census_income":
            return self._census_arrays()
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

    def _census_arrays(self) -> dict[str, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        """One dense vector per person (`tf_mtml.data.census`: standardised + one-hot)."""
        data = self.config.data
        census = load_census_income(resolve_data_dir(data.data_dir or None), data.census_group,
                                     data.problem_seed)
        names = [t.name for t in self.tasks]
        unknown = sorted(set(names) - set(census.labels["train"]))
        if unknown:
            raise ValueError(
                f"Tasks {unknown} are not labels of census group {data.census_group}, whose "
                f"tasks are {sorted(census.labels['train'])}. Rename the tasks or change "
                "`task.data.census_group`."
            )
        return {split: ({FEATURES: census.features[source]},
                        {name: census.labels[source][name] for name in names})
                for split, source in (("train", "train"), ("eval", "validation"),
                                      ("test", "test"))}

    @property
    def input_dim(self) -> int:
        """Width of the `features` vector: the census encoding's, else `data.input_dim`."""
        if self.config.data.source == "census_income":
            return self.arrays["train"][0][FEATURES].shape[1]
        return self.config.data.input_dim

    def input_signature(self) -> dict[str, tf.TensorSpec]:
        return {FEATURES: tf.TensorSpec((None, self.input_dim), tf.float32, name=FEATURES)}

    def build_inputs(self, training: bool,
                     input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        """Per-replica batches of one global stream (`shard_global_batches`).

        Every input pipeline shuffles all the examples with the same seed and keeps its rows
        of each global batch, so any number of replicas and workers trains on exactly the
        batches one device would.
        """
        features, labels = self.arrays["train" if training else "eval"]
        global_batch = self.config.data.global_batch_size
        dataset = multi_label_dataset(features, labels, batch_size=global_batch,
                                      shuffle=training, seed=self.seed, repeat=training,
                                      drop_remainder=True)
        return shard_global_batches(dataset, global_batch, input_context)

    # ----------------------------------------------------------------------------- model
    def build_network(self) -> keras.Model:
        """The functional network `{features} -> {task: raw output}` (`model.architecture`)."""
        model = self.config.model
        dim = self.input_dim
        inputs = {FEATURES: keras.Input((dim,), name=FEATURES)}
        if model.architecture == "shared_bottom":
            outputs = SharedBottom(self.task_output_units, self.bottom_units(),
                                   tower_units=model.tower_units, name="shared_bottom")(
                                       inputs[FEATURES])
        else:
            towers = TaskTowers(self.task_output_units, tower_units=model.tower_units,
                                name="towers")
            outputs = towers(self._tower_inputs(inputs[FEATURES]))
        return keras.Model(inputs, outputs, name=f"{model.architecture}_network")

    def _tower_inputs(self, features):
        """The towers' inputs: one representation per task (one shared one for `omoe`)."""
        model = self.config.model
        architecture, names = model.architecture, [t.name for t in self.tasks]
        if architecture in ("mmoe", "omoe"):
            gate_names = names if architecture == "mmoe" else ["shared"]
            mmoe = MMoE(num_experts=model.num_experts, expert_units=model.expert_units,
                        num_tasks=len(gate_names), expert_dropout=model.expert_dropout,
                        task_names=gate_names, seed=self.seed, name=architecture)
            outputs = mmoe(features)
            return outputs if architecture == "mmoe" else outputs[0]
        if architecture in ("cgc", "ple"):
            experts = {"num_task_experts": model.num_task_experts,
                       "num_shared_experts": model.num_shared_experts,
                       "expert_units": model.expert_units,
                       "expert_dropout": model.expert_dropout, "task_names": names,
                       "seed": self.seed, "name": architecture}
            layer = (CGC(len(names), **experts) if architecture == "cgc"
                     else PLE(len(names), model.ple_num_levels, **experts))
            return layer(features)
        if architecture == "cross_stitch":
            return CrossStitchNetwork(len(names), model.expert_units,
                                      alpha_same=model.cross_stitch_alpha_same,
                                      name=architecture)(features)
        # soft_sharing, or single_task: the same per-task columns without the penalty.
        l2 = model.soft_sharing_l2 if architecture == "soft_sharing" else 0.0
        return SoftSharing(len(names), model.expert_units, l2=l2, name=architecture)(features)

    def bottom_units(self) -> tuple[int, ...]:
        """The shared bottom's widths: as configured, or matched to the MMoE's parameters."""
        model = self.config.model
        if model.bottom_units:
            return tuple(model.bottom_units)
        dim = self.input_dim
        budget = mmoe_param_count(dim, model.num_experts, model.expert_units, len(self.tasks),
                                  model.tower_units, self.task_output_units)
        width = shared_bottom_units_for_budget(dim, budget, self.task_output_units,
                                               model.tower_units,
                                               num_bottom_layers=len(model.expert_units))
        return (width,) * len(model.expert_units)

    def build_model(self) -> MultiTaskModel:
        keras.utils.set_random_seed(self.seed)
        model = MultiTaskModel(self.build_network(), self.tasks,
                               weighting=self.build_weighting())
        if self.config.model.gradient_diagnostics:
            # A model metric, so the Trainer logs it; `multitask_train_step` updates it.
            model.gradient_diagnostics = GradientDiagnostics(model.task_names)
        if any(t.standardize for t in self.tasks):
            model.adapt_label_statistics(self.arrays["train"][1])
        return model

    def build_weighting(self) -> keras.layers.Layer:
        """The configured loss weighting; DWA's default period is one training epoch."""
        model = self.config.model
        options = {"seed": self.seed, "gradnorm_alpha": model.gradnorm_alpha,
                   "dwa_temperature": model.dwa_temperature, "cagrad_c": model.cagrad_c}
        if model.weighting == "dwa":
            num_train = len(next(iter(self.arrays["train"][1].values())))
            options["dwa_period_steps"] = model.dwa_period_steps or max(
                1, num_train // self.config.data.global_batch_size)
        return get_weighting(model.weighting, self.tasks, **options)

    def serve_fn(self, model: MultiTaskModel):
        """`serving_default`: `{task: prediction}` in label space (`MultiTaskModel.serve`)."""
        return model.serve

    def extra_endpoints(self, model: MultiTaskModel) -> dict:
        """`task_score`: `{features, task_id} -> {score, task_name}` (see `task_score`)."""
        return task_score_endpoint(model.serve, self.input_signature(), self.tasks)

    def serving_examples(self, num: int) -> dict[str, dict[str, np.ndarray]]:
        """`{signature: inputs}` of `num` real evaluation examples, for the warmup file."""
        check_positive_int("num", num)
        inputs = {FEATURES: self.arrays["eval"][0][FEATURES][:num].astype(np.float32)}
        return {SERVING_DEFAULT: inputs, **task_score_examples(inputs, self.tasks)}

    def after_train_loop(self, logs: dict[str, float]) -> list[str]:
        """Called by the trainer with each loop's logs: warns of polarised or unused experts.

        Returns:
            The warnings (`expert_utilisation_warnings` of the gate statistics in `logs`),
            each also logged with `absl.logging.warning`.
        """
        messages = expert_utilisation_warnings(logs)
        for message in messages:
            logging.warning("Expert utilisation: %s", message)
        return messages

    # ----------------------------------------------------------------- per-replica steps
    def train_step(self, inputs, model: MultiTaskModel, optimizer, loss_metric) -> None:
        """One step under `model.weighting` (`tf_mtml.weighting.multitask_train_step`)."""
        x, y = inputs
        loss, y_pred = multitask_train_step(model, optimizer, x, y)
        model.update_task_metrics(y, y_pred)
        loss_metric.update_state(loss * tf.distribute.get_replica_context().num_replicas_in_sync)

    def validation_step(self, inputs, model: MultiTaskModel, loss_metric) -> None:
        x, y = inputs
        y_pred = model(x, training=False)
        loss = model.compute_loss(x, y, y_pred, training=False)
        model.update_task_metrics(y, y_pred)
        loss_metric.update_state(loss * tf.distribute.get_replica_context().num_replicas_in_sync)
