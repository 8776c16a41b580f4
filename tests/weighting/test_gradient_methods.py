import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.weighting.cagrad import cagrad
from tf_mtml.weighting.gradient_methods import GradientWeighting
from tf_mtml.weighting.mgda import mgda
from tf_mtml.weighting.pcgrad import pcgrad


def _grads():
    rng = np.random.default_rng(0)
    flat = rng.normal(size=(2, 5))
    flat[1] = -flat[0] + 0.3 * rng.normal(size=5)
    return [[tf.constant(g[:3], tf.float32), tf.constant(g[3:], tf.float32)] for g in flat]


@pytest.mark.parametrize("method", ["pcgrad", "cagrad", "mgda"])
def test_combine_dispatches_to_the_pure_function(method):
    weighting = GradientWeighting(method, {"a": 1.0, "b": 1.0}, cagrad_c=0.3, seed=4)
    expected = {"pcgrad": lambda g: pcgrad(g, seed=(4, 9)), "cagrad": lambda g: cagrad(g, 0.3),
                "mgda": mgda}[method](_grads())
    for got, want in zip(weighting.combine(_grads(), step=9), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_loss_is_the_static_weighted_sum_and_config_round_trips():
    weighting = GradientWeighting("mgda", {"a": 2.0, "b": 0.5}, max_iterations=10)
    total = weighting({"a": tf.constant(1.0), "b": tf.constant(4.0)})
    assert float(total) == pytest.approx(4.0)
    clone = GradientWeighting.from_config(weighting.get_config())
    assert (clone.method, clone.task_weights, clone.max_iterations) == (
        "mgda", {"a": 2.0, "b": 0.5}, 10)
    assert clone.effective_weights() == {"a": 2.0, "b": 0.5}


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"`method`.*'pcgrad', 'cagrad', 'mgda'.*'sgd'"):
        GradientWeighting("sgd", {"a": 1.0})
    with pytest.raises(ValueError, match=r"`cagrad_c`.*Received: cagrad_c=-1"):
        GradientWeighting("cagrad", {"a": 1.0}, cagrad_c=-1)
    with pytest.raises(ValueError, match=r"`max_iterations`.*Received: max_iterations=0"):
        GradientWeighting("mgda", {"a": 1.0}, max_iterations=0)
    with pytest.raises(ValueError, match=r"`seed`.*Received: seed='0'"):
        GradientWeighting("pcgrad", {"a": 1.0}, seed="0")
