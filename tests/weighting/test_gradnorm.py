import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.weighting.gradnorm import GradNorm, gradnorm_weight_gradient


def test_weight_gradient_by_hand():
    w, n = np.array([1.2, 0.8]), np.array([2.0, 5.0])
    losses, initial = np.array([0.5, 3.0]), np.array([1.0, 4.0])
    # G = (2.4, 4.0), G_avg = 3.2; L/L0 = (0.5, 0.75), r = (0.8, 1.2); alpha = 1:
    # target = (2.56, 3.84); sign(G - target) = (-1, +1).
    grad = gradnorm_weight_gradient(w, n, losses, initial, alpha=1.0).numpy()
    np.testing.assert_allclose(grad, [-2.0, 5.0])
    # alpha = 0: every target is G_avg = 3.2.
    np.testing.assert_allclose(gradnorm_weight_gradient(w, n, losses, initial, 0.0), [-2.0, 5.0])


def test_weight_gradient_matches_autodiff_of_l_grad():
    # Two tasks on shared W: L_i(W) = |A_i W - b_i|^2. G_i = |d(w_i L_i)/dW|, computed by a
    # nested tape; L_grad = sum |G_i - G_avg r_i^alpha| with the target held constant.
    rng = np.random.default_rng(0)
    shared = tf.Variable(rng.normal(size=(3, 2)), dtype=tf.float32)
    a = [tf.constant(rng.normal(size=(4, 3)), tf.float32) for _ in range(3)]
    b = [tf.constant(rng.normal(size=(4, 2)), tf.float32) for _ in range(3)]
    weights = tf.Variable([0.7, 1.1, 1.2])
    initial = tf.constant([5.0, 3.0, 4.0])
    alpha = 1.5
    with tf.GradientTape() as outer:
        with tf.GradientTape(persistent=True) as inner:
            task_losses = [tf.reduce_sum((a[i] @ shared - b[i]) ** 2) for i in range(3)]
            weighted = [weights[i] * task_losses[i] for i in range(3)]
        losses = tf.stack(task_losses)
        norms_g = tf.stack([tf.norm(inner.gradient(weighted[i], shared)) for i in range(3)])
        ratios = losses / initial
        target = tf.stop_gradient(tf.reduce_mean(norms_g) * (ratios / tf.reduce_mean(ratios))
                                  ** alpha)
        l_grad = tf.reduce_sum(tf.abs(norms_g - target))
    expected = outer.gradient(l_grad, weights).numpy()
    unweighted = np.array([np.linalg.norm(inner.gradient(task_losses[i], shared))
                           for i in range(3)])
    got = gradnorm_weight_gradient(weights, unweighted, losses, initial, alpha).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_layer_loss_first_step_and_renormalisation():
    layer = GradNorm({"a": 1.0, "b": 0.5, "c": 2.0}, alpha=1.0)
    layer.loss_weights.assign([2.0, -0.5, 1.0])
    losses = {"a": tf.constant(1.0), "b": tf.constant(2.0), "c": tf.constant(3.0)}
    assert float(layer(losses)) == pytest.approx(2.0 * 1 - 0.5 * 0.5 * 2 + 1.0 * 2 * 3)
    # First step: L(0) = L(t), so every r_i = 1 and the target is G_avg.
    vector = tf.constant([1.0, 2.0, 3.0])
    norms = tf.constant([1.0, 1.0, 1.0])
    np.testing.assert_allclose(layer.weight_gradient(norms, vector),
                               gradnorm_weight_gradient([2.0, -0.5, 1.0], norms, vector, vector,
                                                        1.0))
    layer.update_weights(vector)
    # Clipped at 0, then renormalised to sum to K = 3.
    np.testing.assert_allclose(layer.loss_weights.numpy(), [2.0, 0.0, 1.0])
    np.testing.assert_allclose(layer.initial_losses.numpy(), [1.0, 2.0, 3.0])
    layer.update_weights(tf.constant([9.0, 9.0, 9.0]))  # L(0) is recorded only once
    np.testing.assert_allclose(layer.initial_losses.numpy(), [1.0, 2.0, 3.0])
    assert layer.effective_weights() == pytest.approx({"a": 2.0, "b": 0.0, "c": 2.0})


def test_config_round_trip_and_bad_values():
    layer = GradNorm({"a": 1.0, "b": 1.0}, alpha=0.5, name="weighting")
    clone = GradNorm.from_config(layer.get_config())
    assert clone.alpha == 0.5 and clone.task_weights == {"a": 1.0, "b": 1.0}
    with pytest.raises(ValueError, match=r"`alpha`.*>= 0. Received: alpha=-1"):
        GradNorm({"a": 1.0}, alpha=-1)
    with pytest.raises(ValueError, match=r"task_weights.*'a': -2.0"):
        GradNorm({"a": -2.0})
    with pytest.raises(ValueError, match=r"shape \(2,\).*Received: shape=\(3,\)"):
        layer.update_weights(tf.ones((3,)))
