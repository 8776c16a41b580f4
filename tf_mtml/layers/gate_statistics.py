"""Running statistics of mixture-of-experts gates, exposed as a Keras metric."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from tf_mtml.layers._validation import check_positive_int, check_task_names

_TINY = 1e-30


@keras.saving.register_keras_serializable(package="tf_mtml")
class GateStatistics(keras.metrics.Metric):
    """Mean weight of every expert and mean gate entropy, per task.

    Gate polarisation (a task routing everything to one expert, entropy near 0) and gate
    collapse (all tasks using the same experts) show up here long before they show up in the
    task metrics. `MMoE` owns one of these and updates it during training; Keras collects
    layer-owned metrics into `model.metrics`, so the values appear in the `fit` logs.

    Args:
        num_tasks: Number of tasks (gates).
        num_experts: Number of experts.
        task_names: Names used in the result keys instead of `task{k}`.
        name: Metric name.
        dtype: Dtype of the state; float32 by default, whatever the layer policy.

    Call arguments (`update_state`):
        gates: `(batch, num_tasks, num_experts)` gate weights, each row summing to 1.

    Returns (`result`):
        A flat dict `{"gate/{task}/expert{i}_weight": mean gate weight,
        "gate/{task}/entropy": mean gate entropy in nats}` (all zeros before any update).

    Example:
        ```python
        stats = GateStatistics(num_tasks=2, num_experts=4)
        stats.update_state(mmoe.gate_weights(x))
        stats.result()["gate/task0/entropy"]
        ```
    """

    def __init__(
        self,
        num_tasks: int,
        num_experts: int,
        task_names: Sequence[str] | None = None,
        name: str = "gate_statistics",
        dtype: str | None = "float32",
    ):
        super().__init__(name=name, dtype=dtype)
        self.num_tasks = check_positive_int("num_tasks", num_tasks)
        self.num_experts = check_positive_int("num_experts", num_experts)
        self.task_names = check_task_names(task_names, num_tasks)
        self.weight_sum = self.add_variable(
            (num_tasks, num_experts), initializer="zeros", name="weight_sum"
        )
        self.entropy_sum = self.add_variable((num_tasks,), initializer="zeros", name="entropy_sum")
        self.count = self.add_variable((), initializer="zeros", name="count")

    def update_state(self, gates):
        gates = ops.cast(gates, self.dtype)
        batch_size = ops.cast(ops.shape(gates)[0], self.dtype)
        # 0 * log(0) = 0 for gates that underflow to zero.
        entropy = -ops.sum(gates * ops.log(ops.maximum(gates, _TINY)), axis=-1)
        self.weight_sum.assign_add(ops.sum(gates, axis=0))
        self.entropy_sum.assign_add(ops.sum(entropy, axis=0))
        self.count.assign_add(batch_size)

    def result(self) -> dict:
        mean_weight = ops.divide_no_nan(self.weight_sum, self.count)
        mean_entropy = ops.divide_no_nan(self.entropy_sum, self.count)
        names = self.task_names or tuple(f"task{k}" for k in range(self.num_tasks))
        results = {}
        for k, task in enumerate(names):
            for i in range(self.num_experts):
                results[f"gate/{task}/expert{i}_weight"] = mean_weight[k, i]
            results[f"gate/{task}/entropy"] = mean_entropy[k]
        return results

    def get_config(self):
        return {
            **super().get_config(),
            "num_tasks": self.num_tasks,
            "num_experts": self.num_experts,
            "task_names": self.task_names,
        }
