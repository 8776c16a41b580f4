import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.weighting.random_weighting import RandomLossWeighting, random_loss_weights


def test_weights_are_positive_sum_to_k_and_reproducible():
    for k in (2, 5):
        w = random_loss_weights(k, (3, 4)).numpy()
        assert w.shape == (k,) and np.all(w > 0)
        assert w.sum() == pytest.approx(k, rel=1e-6)
        np.testing.assert_array_equal(w, random_loss_weights(k, (3, 4)).numpy())
        assert not np.array_equal(w, random_loss_weights(k, (3, 5)).numpy())


def test_weights_are_a_softmax_of_standard_normals():
    # For 2 tasks w_1 / 2 = sigmoid(z_1 - z_2) with z_1 - z_2 ~ N(0, 2).
    draws = np.array([random_loss_weights(2, (0, s)).numpy() for s in range(2000)])
    logits = np.log(draws[:, 0] / draws[:, 1])
    assert abs(logits.mean()) < 4 * np.sqrt(2 / 2000)
    assert abs(logits.var() - 2.0) < 4 * 2.0 * np.sqrt(2 / 1999)


def test_layer_draws_new_weights_per_step():
    layer = RandomLossWeighting({"a": 1.0, "b": 2.0}, seed=7)
    np.testing.assert_allclose(layer.loss_weights.numpy(), random_loss_weights(2, (7, 0)))
    w = layer.loss_weights.numpy()
    total = layer({"a": tf.constant(3.0), "b": tf.constant(1.0)})
    assert float(total) == pytest.approx(3 * w[0] + 2 * w[1], rel=1e-6)
    layer.update_weights()
    layer.update_weights()
    np.testing.assert_allclose(layer.loss_weights.numpy(), random_loss_weights(2, (7, 2)))
    assert int(layer.step.numpy()) == 2
    clone = RandomLossWeighting.from_config(layer.get_config())
    assert clone.seed == 7 and clone.task_weights == {"a": 1.0, "b": 2.0}


def test_rejects_bad_seed():
    with pytest.raises(ValueError, match=r"`seed`.*integer. Received: seed=1.5"):
        RandomLossWeighting({"a": 1.0}, seed=1.5)
