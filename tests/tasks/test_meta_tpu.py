"""Meta-learning on TPUs: the meta-batch loop a TPU strategy selects, what cannot compile in
bfloat16, and the metric learners' training steps under XLA.

A TPU strategy cannot be built without a TPU, so the TPU strategy here is an uninitialised
`TPUStrategy` instance: enough for the type checks that select the TPU path.
"""


import keras
import pytest
import tensorflow as tf

from tests.train import tpu_checks
from tf_mtml.configs import experiments
from tf_mtml.configs.meta import MetaModelConfig
from tf_mtml.tasks.meta_learners import build_meta_learner, resolve_meta_batch_mode

TPU_STRATEGIES = [object.__new__(tf.distribute.TPUStrategy),
                  object.__new__(tf.distribute.experimental.TPUStrategy)]
METRIC_LEARNERS = [n for n in tpu_checks.experiment_names()
                   if tpu_checks.meta_algorithm(n) and not tpu_checks.is_gradient_based_meta(n)]


@pytest.mark.parametrize("strategy", TPU_STRATEGIES, ids=["TPUStrategy", "experimental"])
def test_auto_selects_map_fn_under_a_tpu_strategy(strategy):
    assert resolve_meta_batch_mode("auto", strategy) == "map_fn"


def test_auto_selects_vectorized_map_elsewhere():
    assert resolve_meta_batch_mode("auto", tf.distribute.get_strategy()) == "vectorized_map"
    assert resolve_meta_batch_mode("auto", tf.distribute.OneDeviceStrategy("/cpu:0")) == (
        "vectorized_map")


def test_an_explicit_mode_is_kept_with_a_warning_for_vectorized_map_on_tpus(caplog):
    assert resolve_meta_batch_mode("map_fn", tf.distribute.get_strategy()) == "map_fn"
    assert not caplog.records
    assert resolve_meta_batch_mode("vectorized_map", TPU_STRATEGIES[0]) == "vectorized_map"
    assert "vectorized_map on TPUs" in caplog.text


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match=r"`meta_batch_mode`.*meta_batch_mode='pmap'"):
        resolve_meta_batch_mode("pmap", tf.distribute.get_strategy())


def test_experiments_default_to_auto_and_the_learner_gets_the_resolved_mode():
    config = experiments.get_experiment("maml_sinusoid").task.model
    assert config.meta_batch_mode == "auto"
    built = {name: build_meta_learner(config, (1,), num_ways=1, eval_num_ways=1,
                                      problem="regression", strategy=strategy).meta_batch_mode
             for name, strategy in [("tpu", TPU_STRATEGIES[0]),
                                    ("default", tf.distribute.get_strategy())]}
    assert built == {"tpu": "map_fn", "default": "vectorized_map"}


def _maml_conv4(algorithm, strategy):
    config = MetaModelConfig(algorithm=algorithm, filters=4, meta_batch_mode="map_fn")
    return build_meta_learner(config, (28, 28, 1), num_ways=5, eval_num_ways=5,
                              problem="classification", strategy=strategy)


def test_second_order_maml_through_max_pooling_in_bfloat16_is_refused_on_tpus():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    for algorithm in ("maml", "meta_sgd"):
        with pytest.raises(ValueError, match=r"mixed_bfloat16.*float32.*fomaml"):
            _maml_conv4(algorithm, TPU_STRATEGIES[0])
    # First order, the head only, or no XLA: nothing differentiates max-pooling twice.
    assert _maml_conv4("fomaml", TPU_STRATEGIES[0]).first_order
    assert _maml_conv4("anil", TPU_STRATEGIES[0]).meta_batch_mode == "map_fn"
    assert _maml_conv4("maml", tf.distribute.get_strategy()).meta_batch_mode == "map_fn"


@pytest.mark.parametrize("dtype,compiles", [("float32", True), ("bfloat16", False)])
def test_xla_differentiates_max_pooling_twice_in_float32_only(dtype, compiles):
    """Why the refusal above: XLA has no bfloat16 MaxPoolGradGrad (on any device)."""
    x = tf.random.stateless_uniform((1, 4, 4, 1), seed=(1, 2), dtype=dtype)

    @tf.function(jit_compile=True)
    def second_derivative(x):
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = tf.reduce_sum(tf.nn.max_pool2d(x, 2, 2, "VALID") ** 2)
            first = tf.reduce_sum(inner.gradient(y, x))
        return outer.gradient(first, x)

    if compiles:
        # d/dx of 2 * max at the argmax: 2 at each pool's maximum, 0 elsewhere.
        assert float(tf.reduce_sum(second_derivative(x))) == pytest.approx(8.0)
    else:
        with pytest.raises(tf.errors.InvalidArgumentError, match="MaxPoolGradGrad"):
            second_derivative(x)


@pytest.fixture(scope="module")
def xla_report():
    return tpu_checks.run_available("xla", METRIC_LEARNERS)


@pytest.mark.slow
@pytest.mark.parametrize("name", METRIC_LEARNERS)
def test_metric_learner_train_step_compiles_with_xla(xla_report, name):
    result = tpu_checks.checked_result(xla_report, name)
    tpu_checks.assert_xla_step_trained(result)
