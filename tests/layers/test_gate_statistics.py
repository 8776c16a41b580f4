"""Tests of tf_mtml.layers.gate_statistics."""

import numpy as np
import pytest

from tests.layers.helpers import assert_config_round_trip
from tf_mtml.layers import GateStatistics, expert_utilisation_warnings


def _gates(rng, batch, num_tasks=2, num_experts=3):
    logits = rng.normal(size=(batch, num_tasks, num_experts))
    return (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype("float32")


def test_result_matches_numpy_over_several_updates():
    rng = np.random.default_rng(0)
    batches = [_gates(rng, 5), _gates(rng, 3)]
    metric = GateStatistics(num_tasks=2, num_experts=3)
    for gates in batches:
        metric.update_state(gates)
    result = {k: float(v) for k, v in metric.result().items()}
    gates = np.concatenate(batches)
    mean_weight = gates.mean(0)
    mean_entropy = -(gates * np.log(gates)).sum(-1).mean(0)
    assert len(result) == 2 * 3 + 2
    for k in range(2):
        assert result[f"gate/task{k}/entropy"] == pytest.approx(mean_entropy[k], rel=1e-5)
        for i in range(3):
            expected = mean_weight[k, i]
            assert result[f"gate/task{k}/expert{i}_weight"] == pytest.approx(expected, rel=1e-5)


def test_entropy_closed_forms_and_zero_gates():
    metric = GateStatistics(num_tasks=2, num_experts=4, task_names=["uniform", "one_hot"])
    gates = np.array([[[0.25] * 4, [0.0, 1.0, 0.0, 0.0]]], "float32")
    metric.update_state(gates)
    result = metric.result()
    assert float(result["gate/uniform/entropy"]) == pytest.approx(np.log(4.0), rel=1e-6)
    assert float(result["gate/one_hot/entropy"]) == 0.0
    assert float(result["gate/one_hot/expert1_weight"]) == 1.0


def test_reset_state_and_empty_result():
    metric = GateStatistics(num_tasks=1, num_experts=2)
    assert all(float(v) == 0.0 for v in metric.result().values())
    metric.update_state(np.array([[[0.2, 0.8]]], "float32"))
    assert float(metric.result()["gate/task0/expert1_weight"]) == pytest.approx(0.8)
    metric.reset_state()
    assert all(float(v) == 0.0 for v in metric.result().values())
    assert float(metric.count) == 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_tasks": 0, "num_experts": 2}, "num_tasks=0"),
        ({"num_tasks": 2, "num_experts": 0}, "num_experts=0"),
        ({"num_tasks": 2, "num_experts": 2, "task_names": ["a"]}, r"task_names=\['a'\]"),
        ({"num_tasks": 2, "num_experts": 2, "task_names": ["a", "a"]}, "task_names="),
        ({"num_tasks": 2, "num_experts": 2, "task_names": "ab"}, "task_names='ab'"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GateStatistics(**kwargs)


def test_config_round_trip():
    assert_config_round_trip(GateStatistics(num_tasks=2, num_experts=3, task_names=["a", "b"]))


def _utilisation_results(task_gates):
    """GateStatistics results for one batch of `(num_tasks, num_experts)` gates."""
    gates = np.asarray(task_gates, "float32")
    metric = GateStatistics(num_tasks=gates.shape[0], num_experts=gates.shape[1],
                            task_names=["a", "level0/b"][: gates.shape[0]])
    metric.update_state(gates[None])
    return metric.result()


def test_healthy_gates_give_no_warning():
    results = _utilisation_results([[0.4, 0.3, 0.3], [0.2, 0.5, 0.3]])
    assert expert_utilisation_warnings(results) == []


def test_polarised_gate_and_unused_experts_are_flagged():
    # Weights exact in float32, so that the thresholds can be hit exactly.
    results = _utilisation_results([[0.9375, 0.0546875, 0.0078125], [0.5, 0.25, 0.25]])
    messages = expert_utilisation_warnings(results)
    assert len(messages) == 2
    assert messages[0].startswith("Gate 'a' is polarised: expert 0 takes 93.8%")
    assert "never uses 1 of its 3 experts" in messages[1] and "expert 2: 0.78%" in messages[1]
    # `polarised` is inclusive, `unused` exclusive, as documented.
    assert expert_utilisation_warnings(results, polarised=0.94, unused=0.0078125) == []
    assert len(expert_utilisation_warnings(results, polarised=0.9375, unused=0.008)) == 2


def test_gate_names_with_slashes_and_unused_experts_without_polarisation():
    results = _utilisation_results([[0.5, 0.5, 0.0], [0.0, 0.002, 0.998]])
    messages = expert_utilisation_warnings(results)
    assert messages == [
        "Gate 'a' never uses 1 of its 3 experts (mean weight < 1%; expert 2: 0.00%).",
        "Gate 'level0/b' is polarised: expert 2 takes 99.8% of its weight (>= 90%). Consider "
        "expert dropout (`task.model.expert_dropout`) or fewer experts.",
        "Gate 'level0/b' never uses 2 of its 3 experts (mean weight < 1%; expert 0: 0.00%, "
        "expert 1: 0.20%).",
    ]


def test_gates_without_updates_and_other_keys_are_ignored():
    empty = GateStatistics(num_tasks=1, num_experts=2).result()
    assert expert_utilisation_warnings({**empty, "loss": 0.3, "y1/mse": 0.001}) == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"polarised": 0.0}, "polarised=0.0"),
        ({"polarised": 1.5}, "polarised=1.5"),
        ({"unused": -0.1}, "unused=-0.1"),
        ({"unused": 1.0}, "unused=1.0"),
        ({"unused": True}, "unused=True"),
        ({"polarised": 0.3, "unused": 0.3}, "unused=0.3 >= polarised=0.3"),
    ],
)
def test_invalid_thresholds_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        expert_utilisation_warnings({}, **kwargs)
