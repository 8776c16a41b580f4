"""A Keras 3 multi-task model: task specs, masked per-task losses, weighting and metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tf_mtml.losses.masked import label_mask, masked_sum_and_count, per_example_loss
from tf_mtml.models.task_spec import TaskSpec, as_task_specs
from tf_mtml.weighting.diagnostics import GradientDiagnostics
from tf_mtml.weighting.factory import get_weighting


def _make_metric(task: TaskSpec, metric: str) -> keras.metrics.Metric:
    name = f"{task.name}/{metric}"
    if task.type == "binary":
        return keras.metrics.AUC(name=name) if metric == "auc" else keras.metrics.BinaryAccuracy(
            name=name)
    if task.type == "multiclass":
        return keras.metrics.SparseCategoricalAccuracy(name=name)
    if metric == "mae":
        return keras.metrics.MeanAbsoluteError(name=name)
    return keras.metrics.MeanSquaredError(name=name)


def _symbolic_outputs(network):
    """The functional network's output structure, or None for a subclassed one."""
    try:
        return network.output
    except (AttributeError, ValueError):
        return None


def _num_replicas() -> int:
    ctx = tf.distribute.get_replica_context()
    return 1 if ctx is None else ctx.num_replicas_in_sync


def _checked_label_values(task: TaskSpec, labels):
    """`labels` behind a run-time check that they are labels of `task`.

    A binary label outside [0, 1], an infinite regression target or a class id past
    `num_classes` would still give a loss (or NaN on GPU), so the step fails instead with
    `InvalidArgumentError` naming the first bad value. The check is a graph op; XLA
    (`jit_compile=True`, TPUs) compiles it away.
    """
    if task.type == "multiclass":
        bad = labels >= task.num_classes
        expected = f"class ids below num_classes={task.num_classes} (negative = missing)"
    elif task.type == "binary":
        bad = (labels < 0.0) | (labels > 1.0)  # False for NaN, the missing-label marker.
        expected = "values in [0, 1] (NaN = missing)"
    else:
        bad = tf.math.is_inf(labels)
        expected = "finite values (NaN = missing)"
    # Reductions, not argmax/gather, so that an empty batch (a replica's share of a partial
    # batch) passes and every shape stays static.
    rows = tf.range(tf.shape(labels)[0])
    first = tf.reduce_min(tf.where(bad, rows, tf.int32.max))
    value = tf.reduce_max(tf.where(tf.equal(rows, first), labels, labels.dtype.min))
    check = tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(bad)),
        [f"Received an invalid label for {task.type} task '{task.name}', expected {expected}. "
         "Fix the label or mark it missing. First invalid label at row", first, "value:", value])
    with tf.control_dependencies([check]):
        return tf.identity(labels)


@keras.saving.register_keras_serializable(package="tf_mtml")
class MultiTaskModel(keras.Model):
    """Wraps a network with one raw output per task into a trainable multi-task model.

    The network maps the inputs to `{task_name: raw}` with `raw` the logits
    (`(batch, 1)` binary, `(batch, num_classes)` multiclass) or the standardised value
    (`(batch, 1)` regression). `compute_loss` (Keras 3) sums the weighted per-task losses;
    each task's loss is the mean over the examples that have a label for it (NaN marks a
    missing float label, a negative value a missing class label), so a missing label
    contributes nothing. Under a `tf.distribute` strategy the label counts are summed over
    replicas, so each replica returns its exact share of the global-batch loss.

    `model(x)` returns the raw outputs; `model.postprocess`, `model.predict` and the
    exported signature return predictions in label space: probabilities for binary
    (`(batch,)`) and multiclass (`(batch, num_classes)`), the de-standardised value for
    regression (`(batch,)`).

    Args:
        network: A Keras model or layer returning `{task_name: raw}`.
        tasks: `TaskSpec`s (or their config dicts), one per network output.
        weighting: `"static"` (the specs' weights), `"uncertainty"` (Kendall et al. 2018)
            or a weighting layer `(task_losses, num_replicas) -> total`.

    Example:
        ```python
        tasks = [TaskSpec("click", "binary"), TaskSpec("watch", "regression", standardize=True)]
        model = MultiTaskModel(network, tasks, weighting="uncertainty")
        model.adapt_label_statistics({"watch": watch_minutes})
        model.compile(optimizer="adam")
        model.fit(x, {"click": clicks, "watch": watch_minutes})
        ```
    """

    def __init__(self, network: keras.layers.Layer,
                 tasks: Sequence[TaskSpec | Mapping[str, Any]],
                 weighting: str | keras.layers.Layer = "static", **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.tasks = as_task_specs(tasks)
        self.task_names = tuple(t.name for t in self.tasks)
        self.weighting = get_weighting(weighting, self.tasks)
        n = len(self.tasks)
        self.label_mean = self.add_weight(shape=(n,), initializer="zeros", trainable=False,
                                          dtype="float32", name="label_mean")
        self.label_std = self.add_weight(shape=(n,), initializer="ones", trainable=False,
                                         dtype="float32", name="label_std")
        self.task_loss_trackers = [keras.metrics.Mean(name=f"{t.name}/loss") for t in self.tasks]
        self.task_metrics = [[_make_metric(t, m) for m in t.metric_names] for t in self.tasks]
        self._check_network_outputs(_symbolic_outputs(network))
        # Every variable of this wrapper exists now; a functional network is built too.
        self.built = bool(network.built)

    # ----------------------------------------------------------------------------- forward
    def build(self, input_shape=None):
        if not self.network.built:
            self.network.build(input_shape)
        self.built = True

    def call(self, inputs, training=False):
        outputs = self.network(inputs, training=training)
        self._check_network_outputs(outputs)
        return outputs

    def postprocess(self, raw_outputs: Mapping[str, Any]) -> dict[str, Any]:
        """Raw outputs -> predictions in label space (probabilities, label units)."""
        predictions = {}
        for i, task in enumerate(self.tasks):
            raw = ops.cast(raw_outputs[task.name], "float32")
            if task.type == "binary":
                predictions[task.name] = ops.sigmoid(ops.squeeze(raw, -1))
            elif task.type == "multiclass":
                predictions[task.name] = ops.softmax(raw, axis=-1)
            else:
                predictions[task.name] = (ops.squeeze(raw, -1) * self.label_std[i]
                                          + self.label_mean[i])
        return predictions

    def serve(self, inputs):
        """The serving function: inputs -> `{task_name: prediction}`."""
        return self.postprocess(self(inputs, training=False))

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.serve(x)

    # ------------------------------------------------------------------------------- loss
    def task_losses(self, y, y_pred, sample_weight=None) -> dict[str, Any]:
        """`{task: loss}`: this replica's share of each task's global masked-mean loss."""
        y = self.check_labels(y)
        sums, counts = [], []
        for i, task in enumerate(self.tasks):
            labels = _checked_label_values(task, self._check_batch(task, y[task.name], y_pred))
            loss, mask = per_example_loss(task, labels, y_pred[task.name],
                                          self.label_mean[i], self.label_std[i])
            total, count = masked_sum_and_count(loss, mask, self._task_weight(sample_weight, task))
            sums.append(total)
            counts.append(count)
        counts = ops.stack(counts)
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            counts = ctx.all_reduce(tf.distribute.ReduceOp.SUM, counts)
        return {t.name: sums[i] / ops.maximum(counts[i], 1.0) for i, t in enumerate(self.tasks)}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Weighted sum of the task losses plus regularisation losses (Keras 3 API)."""
        del x
        losses = self.task_losses(y, y_pred, sample_weight)
        replicas = _num_replicas()
        for task, tracker in zip(self.tasks, self.task_loss_trackers, strict=True):
            tracker.update_state(losses[task.name] * replicas)
        total = self.weighting(losses, num_replicas=replicas)
        if self.losses:
            total = total + ops.sum(ops.stack(self.losses)) / replicas
        return total

    # ---------------------------------------------------------------------------- metrics
    def update_task_metrics(self, y, y_pred, sample_weight=None) -> None:
        """Updates every task metric with label-space predictions, skipping missing labels."""
        y = self.check_labels(y)
        predictions = self.postprocess(y_pred)
        for task, metrics in zip(self.tasks, self.task_metrics, strict=True):
            labels = y[task.name]
            mask = label_mask(task, labels)
            weight = self._task_weight(sample_weight, task)
            weight = mask if weight is None else mask * ops.cast(weight, "float32")
            labels = ops.where(mask > 0, labels, ops.zeros_like(labels))
            prediction = predictions[task.name]
            if task.type != "multiclass":
                # Keras metric wrappers reduce the last axis: give them one value per row.
                labels, prediction = labels[:, None], prediction[:, None]
            for metric in metrics:
                metric.update_state(labels, prediction, sample_weight=weight)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        del x
        self.update_task_metrics(y, y_pred, sample_weight)
        return self.get_metrics_result()

    # ------------------------------------------------------------------ label statistics
    def set_label_statistics(self, statistics: Mapping[str, tuple[float, float]]) -> None:
        """Sets `(mean, std)` of standardised regression tasks, e.g. from training labels."""
        means = ops.convert_to_numpy(self.label_mean).copy()
        stds = ops.convert_to_numpy(self.label_std).copy()
        for name, (mean, std) in statistics.items():
            index = self._task_index(name)
            if not self.tasks[index].standardize:
                raise ValueError(
                    f"Task '{name}' does not standardise its labels; set `standardize=True` in "
                    "its TaskSpec or do not pass statistics for it."
                )
            if not (std > 0 and abs(mean) < float("inf")):
                raise ValueError(
                    f"Label statistics of task '{name}' must be a finite mean and a std > 0. "
                    f"Received: mean={mean}, std={std}"
                )
            means[index], stds[index] = mean, std
        self.label_mean.assign(means)
        self.label_std.assign(stds)

    def adapt_label_statistics(self, labels: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
        """Computes and sets the statistics of every standardised task from its labels."""
        statistics = {}
        for task in self.tasks:
            if task.standardize:
                if task.name not in labels:
                    raise ValueError(
                        f"No labels for standardised task '{task.name}'. Pass its training labels"
                        f" in `labels` (received tasks {sorted(labels)}), or set its statistics "
                        "with `set_label_statistics`."
                    )
                values = np.asarray(labels[task.name], dtype="float64").reshape(-1)
                values = values[np.isfinite(values)]
                if values.size < 2:
                    raise ValueError(
                        f"Task '{task.name}' needs at least 2 labelled examples to standardise; "
                        f"received {values.size}."
                    )
                statistics[task.name] = (float(values.mean()), float(max(values.std(), 1e-12)))
        self.set_label_statistics(statistics)
        return statistics

    # ------------------------------------------------------------------------ validation
    def check_labels(self, y) -> dict[str, Any]:
        """Validates the label dict at trace time; returns `{task: (batch,) labels}`."""
        if not isinstance(y, Mapping):
            raise ValueError(
                "A multi-task model takes labels as a dict {task_name: labels}, with NaN (float) "
                f"or -1 (int) marking a missing label. Received: {type(y).__name__}"
            )
        unknown = sorted(set(y) - set(self.task_names))
        if unknown:
            raise ValueError(
                f"Received labels for unknown task(s) {unknown}. The model's tasks are "
                f"{list(self.task_names)}: rename the label keys or add a TaskSpec for them."
            )
        missing = [n for n in self.task_names if n not in y]
        if missing:
            raise ValueError(
                f"No labels for task(s) {missing}. Pass a label for every task and mark the "
                "examples without one as NaN (float labels) or -1 (class labels)."
            )
        return {t.name: self._check_label(t, y[t.name]) for t in self.tasks}

    def _check_label(self, task: TaskSpec, labels):
        labels = ops.convert_to_tensor(labels)
        shape = tuple(labels.shape)
        if len(shape) == 2 and shape[-1] == 1:
            labels = ops.squeeze(labels, -1)
        elif len(shape) != 1:
            raise ValueError(
                f"Labels of task '{task.name}' must have shape (batch,) or (batch, 1). "
                f"Received: shape={shape}"
            )
        dtype = keras.backend.standardize_dtype(labels.dtype)
        if task.type == "multiclass":
            if "int" not in dtype:
                raise ValueError(
                    f"Labels of multiclass task '{task.name}' must be integer class ids "
                    f"(-1 = missing). Received: dtype={dtype}. Cast them to int32."
                )
            return labels
        if dtype == "string" or dtype.startswith("complex"):
            raise ValueError(
                f"Labels of {task.type} task '{task.name}' must be numeric (float, NaN = "
                f"missing). Received: dtype={dtype}"
            )
        return ops.cast(labels, "float32")

    @staticmethod
    def _check_batch(task: TaskSpec, labels, y_pred):
        rows, outputs = labels.shape[0], y_pred[task.name].shape[0]
        if rows is not None and outputs is not None and rows != outputs:
            raise ValueError(
                f"Labels of task '{task.name}' have {rows} rows, but the model's output for it "
                f"has {outputs}: one label per example is expected. Check that the labels and "
                "the features come from the same batch."
            )
        return labels

    def _check_network_outputs(self, outputs) -> None:
        if outputs is None:
            return
        if not isinstance(outputs, Mapping) or set(outputs) != set(self.task_names):
            got = sorted(outputs) if isinstance(outputs, Mapping) else type(outputs).__name__
            raise ValueError(
                f"The network must return a dict with one raw output per task "
                f"{list(self.task_names)}. Received: {got}"
            )
        for task in self.tasks:
            units = outputs[task.name].shape[-1]
            if units is not None and units != task.output_units:
                raise ValueError(
                    f"The network's output for {task.type} task '{task.name}' has {units} "
                    f"units; expected {task.output_units}."
                )

    def _task_index(self, name: str) -> int:
        if name not in self.task_names:
            raise ValueError(
                f"Unknown task '{name}'. The model's tasks are {list(self.task_names)}: use one "
                "of these names (check the spelling against the model's TaskSpecs).")
        return self.task_names.index(name)

    @staticmethod
    def _task_weight(sample_weight, task: TaskSpec):
        if isinstance(sample_weight, Mapping):
            weight = sample_weight.get(task.name)
        else:
            weight = sample_weight
        return None if weight is None else ops.reshape(weight, (-1,))

    # ---------------------------------------------------------------------- serialization
    def get_config(self):
        return {
            **super().get_config(),
            "network": keras.saving.serialize_keras_object(self.network),
            "tasks": [t.get_config() for t in self.tasks],
            "weighting": keras.saving.serialize_keras_object(self.weighting),
            # Attached after construction by the multi-task task family (a metric, no weights).
            "gradient_diagnostics": getattr(self, "gradient_diagnostics", None) is not None,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        config["weighting"] = keras.saving.deserialize_keras_object(config["weighting"])
        diagnostics = config.pop("gradient_diagnostics", False)
        model = cls(**config)
        if diagnostics:
            model.gradient_diagnostics = GradientDiagnostics(model.task_names)
        return model
