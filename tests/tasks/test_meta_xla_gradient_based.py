"""The gradient-based meta-learners' training steps compile with XLA, as on TPUs.

MAML (second and first order, ANIL, Meta-SGD), Reptile and the LSTM meta-optimizer: one
`task.train_step` under `strategy.run` inside `tf.function(jit_compile=True)` (default
strategy, CPU) with `meta_batch_mode=map_fn`, what a TPU strategy selects; a finite loss and
updated weights. One inner step each: XLA unrolls every inner step, so more only add time.
"""


import pytest

from tests.train import tpu_checks

NAMES = [n for n in tpu_checks.experiment_names() if tpu_checks.is_gradient_based_meta(n)]
MAML_FAMILY = ("maml", "fomaml", "anil", "meta_sgd")


@pytest.fixture(scope="module")
def report():
    return tpu_checks.run_available("xla", NAMES)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_train_step_compiles_with_xla_and_updates_the_weights(report, name):
    result = tpu_checks.checked_result(report, name)
    tpu_checks.assert_xla_step_trained(result)
    if tpu_checks.meta_algorithm(name) in MAML_FAMILY:
        assert result["meta_batch_mode"] == "map_fn"
