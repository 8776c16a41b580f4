"""Running statistics of mixture-of-experts gates (a Keras metric), and checks of them."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import keras
from keras import ops

from tf_mtml.layers._validation import check_positive_int, check_task_names

_TINY = 1e-30
_WEIGHT_KEY = re.compile(r"^gate/(?P<gate>.+)/expert(?P<expert>\d+)_weight$")


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


def _check_fraction(name: str, value, low_open: bool, high_open: bool) -> float:
    interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (0 < value if low_open else 0 <= value)
        or not (value < 1 if high_open else value <= 1)
    ):
        raise ValueError(
            f"Received an invalid value for `{name}`, expected a float in {interval}. "
            f"Received: {name}={value!r}"
        )
    return float(value)


def expert_utilisation_warnings(
    results: Mapping[str, float], polarised: float = 0.9, unused: float = 0.01
) -> list[str]:
    """Flags polarised gates and unused experts in `GateStatistics` results.

    A gate is polarised when one expert's mean weight is at least `polarised`: the mixture
    has collapsed to that expert (Zhao et al. RecSys 2019 counter it with expert dropout). An
    expert is unused by a gate when its mean weight is below `unused`. Gates without
    statistics yet (all weights 0, before any update) are skipped, and keys that are not
    expert weights are ignored, so the logs of a whole training loop can be passed.

    Args:
        results: `{"gate/{gate}/expert{i}_weight": mean weight, ...}`, e.g.
            `GateStatistics.result()` or the trainer's logs (values may be tensors).
        polarised: Mean weight from which one expert dominates a gate, in `(0, 1]`.
        unused: Mean weight below which an expert counts as unused, in `[0, 1)`, below
            `polarised`.

    Returns:
        One message per finding (a polarised gate, or the unused experts of a gate), ordered
        by gate name; empty when every gate is healthy.

    Example:
        ```python
        for message in expert_utilisation_warnings(metric_results(model.metrics)):
            logging.warning(message)
        ```
    """
    polarised = _check_fraction("polarised", polarised, low_open=True, high_open=False)
    unused = _check_fraction("unused", unused, low_open=False, high_open=True)
    if unused >= polarised:
        raise ValueError(
            f"Received unused={unused} >= polarised={polarised}: an expert cannot be both "
            "unused and dominant. Pass `unused` below `polarised`."
        )
    gates: dict[str, dict[int, float]] = {}
    for key, value in results.items():
        match = _WEIGHT_KEY.match(key)
        if match:
            gates.setdefault(match["gate"], {})[int(match["expert"])] = float(value)
    messages = []
    for gate, weights in sorted(gates.items()):
        if sum(weights.values()) <= 0.0:
            continue
        top = max(weights, key=weights.get)
        if weights[top] >= polarised:
            messages.append(
                f"Gate '{gate}' is polarised: expert {top} takes {weights[top]:.1%} of its "
                f"weight (>= {polarised * 100:g}%). Consider expert dropout "
                "(`task.model.expert_dropout`) or fewer experts."
            )
        idle = {i: w for i, w in sorted(weights.items()) if w < unused}
        if idle:
            shares = ", ".join(f"expert {i}: {w:.2%}" for i, w in idle.items())
            messages.append(
                f"Gate '{gate}' never uses {len(idle)} of its {len(weights)} experts (mean "
                f"weight < {unused * 100:g}%; {shares})."
            )
    return messages
