"""Every registered experiment's training step compiles with XLA, as every TPU step does.

One `task.train_step` under `strategy.run` inside `tf.function(jit_compile=True)` (default
strategy, CPU), on a Trainer's model and optimizer: it must compile (no string ops,
`tf.py_function` or dynamic shapes), give a finite loss and update the weights. This module
covers the multi-task, ranking and contrastive experiments; the meta-learning ones are in
`test_meta_tpu.py` (metric learners) and `test_meta_xla_gradient_based.py`.
"""


import pytest

from tests.train import tpu_checks

NAMES = [n for n in tpu_checks.experiment_names() if tpu_checks.meta_algorithm(n) is None]


@pytest.fixture(scope="module")
def report():
    return tpu_checks.run_available("xla", NAMES)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_train_step_compiles_with_xla_and_updates_the_weights(report, name):
    result = tpu_checks.checked_result(report, name)
    tpu_checks.assert_xla_step_trained(result)
