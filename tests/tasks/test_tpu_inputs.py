"""Every registered experiment feeds a TPU static shapes, split evenly over the replicas.

TPUs compile each step for fixed shapes, so every element of the training (and evaluation)
inputs must have a fully defined shape, through `distribute_datasets_from_function` (as the
Trainer reads them) and through `task.build_inputs` directly. Checked with 2 logical CPUs in a
fresh process (`tests/train/tpu_checks.py`).

Contrastive and ranking experiments evaluate on the host with `evaluate_model` (a linear
probe, k-NN, whole request lists), not with evaluation batches on the replicas.
"""

import pytest

from tests.train import tpu_checks

NAMES = tpu_checks.experiment_names()


@pytest.fixture(scope="module")
def report():
    return tpu_checks.run_available("shapes", NAMES)


def _check_static_and_split(shapes: dict, replicas: int) -> None:
    for kind in ("distributed", "values", "plain", "plain_per_replica"):
        assert shapes[kind], f"no tensors in the {kind} inputs"
        undefined = [s for s in shapes[kind] if None in s]
        assert not undefined, f"{kind} inputs have undefined dimensions: {undefined}"
    # Each replica gets one slice of every tensor, as the distributed spec says.
    per_replica = shapes["plain_per_replica"]
    assert shapes["values"] == [s for s in per_replica for _ in range(replicas)]
    assert shapes["distributed"] == shapes["values"]
    # The global batch is split evenly: the replicas' leading dimensions add up to it.
    assert [[replicas * s[0], *s[1:]] for s in per_replica] == shapes["plain"]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_training_inputs_are_static_and_split_evenly(report, name):
    result = tpu_checks.checked_result(report, name)
    assert result["replicas"] == 2
    _check_static_and_split(result["train"], result["replicas"])


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_evaluation_inputs_are_static_or_evaluated_on_the_host(report, name):
    result = tpu_checks.checked_result(report, name)
    if isinstance(result["eval"], str):  # the task has `evaluate_model`
        assert result["eval"] == "evaluate_model", result["eval"]
    else:
        _check_static_and_split(result["eval"], result["replicas"])
