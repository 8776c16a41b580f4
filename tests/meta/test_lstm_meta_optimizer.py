"""LSTM meta-optimizer: SGD limit, numpy reference of the update, gradients, learning, saving."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.meta.lstm_meta_optimizer import LSTMMetaOptimizer, preprocess


def _linear_learner() -> keras.Model:
    learner = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    learner.set_weights([np.array([[0.4]], np.float32), np.array([-0.2], np.float32)])
    return learner


def _regression_episodes(seed: int, batch: int = 4, shots: int = 5, queries: int = 8) -> dict:
    rng = np.random.default_rng(seed)
    slopes = rng.uniform(-2.0, 2.0, (batch, 1, 1))
    offsets = rng.uniform(-1.0, 1.0, (batch, 1, 1))
    support_x = rng.uniform(-2.0, 2.0, (batch, shots, 1))
    query_x = rng.uniform(-2.0, 2.0, (batch, queries, 1))
    return {"support_x": support_x.astype(np.float32),
            "support_y": (slopes * support_x + offsets).astype(np.float32),
            "query_x": query_x.astype(np.float32),
            "query_y": (slopes * query_x + offsets).astype(np.float32)}


def _sgd_gates(meta: LSTMMetaOptimizer, lr: float) -> None:
    """Zero gate kernels, f = sigmoid(30) = 1 in float32, i = lr."""
    meta.input_gate_kernel.assign(np.zeros(meta.input_gate_kernel.shape, np.float32))
    meta.forget_gate_kernel.assign(np.zeros(meta.forget_gate_kernel.shape, np.float32))
    meta.input_gate_bias.assign([math.log(lr / (1.0 - lr))])
    meta.forget_gate_bias.assign([30.0])


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _preprocess_numpy(x: np.ndarray, p: float = 10.0) -> np.ndarray:
    x = x.astype(np.float64)
    large = np.abs(x) >= np.exp(-p)
    log_part = np.where(large, np.log(np.maximum(np.abs(x), np.exp(-p))) / p, -1.0)
    return np.stack([log_part, np.where(large, np.sign(x), np.exp(p) * x)], axis=-1)


def test_preprocess_matches_the_log_sign_encoding():
    x = np.array([3.0, -0.5, 1e-3, -2e-5, 1e-6, -3e-7, 0.0], np.float32)
    np.testing.assert_allclose(preprocess(x).numpy(), _preprocess_numpy(x), rtol=1e-5, atol=1e-7)


def test_sgd_gates_give_sgd_steps():
    lr = 0.05
    meta = LSTMMetaOptimizer(_linear_learner(), inner_lr=0.01, problem="regression")
    _sgd_gates(meta, lr)
    episode = _regression_episodes(seed=0, batch=1)
    x, y = episode["support_x"][0].ravel(), episode["support_y"][0].ravel()
    w, b = 0.4, -0.2
    for steps in range(1, 4):
        # Gradient of mean((w x + b - y)^2).
        residual = w * x + b - y
        w, b = w - lr * 2.0 * np.mean(x * residual), b - lr * 2.0 * np.mean(residual)
        kernel, bias = meta.adapt(episode["support_x"][0], episode["support_y"][0], steps)
        np.testing.assert_allclose([float(kernel[0, 0]), float(bias[0])], [w, b], rtol=1e-5)


def test_update_step_matches_a_numpy_reference():
    keras.utils.set_random_seed(1)
    meta = LSTMMetaOptimizer(_linear_learner(), hidden_units=3)
    rng = np.random.default_rng(0)
    for v in meta.trainable_variables:
        v.assign(rng.normal(scale=0.5, size=v.shape).astype(np.float32))
    num_params = 7
    params = rng.normal(size=num_params).astype(np.float32)
    grads = np.array([0.3, -2.0, 1e-6, -4e-5, 0.0, 7.0, -1e-2], np.float32)
    loss = np.float32(0.8)
    h, c = (rng.normal(size=(num_params, 3)).astype(np.float32) for _ in range(2))
    i_prev, f_prev = (rng.uniform(size=(num_params, 1)).astype(np.float32) for _ in range(2))
    new_params, (h_new, c_new, i_new, f_new) = meta.update_step(
        tf.constant(params), tf.constant(grads), tf.constant(loss), (h, c, i_prev, f_prev))

    features = np.concatenate(
        [_preprocess_numpy(grads), np.tile(_preprocess_numpy(loss), (num_params, 1))], axis=1)
    lstm = meta.gradient_lstm
    z = features @ lstm.kernel.numpy() + h @ lstm.recurrent_kernel.numpy() + lstm.bias.numpy()
    zi, zf, zc, zo = np.split(z, 4, axis=1)
    c_ref = _sigmoid(zf) * c + _sigmoid(zi) * np.tanh(zc)
    h_ref = _sigmoid(zo) * np.tanh(c_ref)
    shared = np.concatenate([h_ref, features, params[:, None]], axis=1)
    i_ref = _sigmoid(np.concatenate([shared, i_prev], 1) @ meta.input_gate_kernel.numpy()
                     + meta.input_gate_bias.numpy())
    f_ref = _sigmoid(np.concatenate([shared, f_prev], 1) @ meta.forget_gate_kernel.numpy()
                     + meta.forget_gate_bias.numpy())
    params_ref = f_ref[:, 0] * params - i_ref[:, 0] * grads
    for got, want in [(new_params, params_ref), (h_new, h_ref), (c_new, c_ref),
                      (i_new, i_ref), (f_new, f_ref)]:
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def test_initial_gates_are_close_to_sgd_with_inner_lr():
    meta = LSTMMetaOptimizer(_linear_learner(), inner_lr=0.02, forget_bias=5.0)
    state = meta.initial_state(2)
    _, (_, _, i, f) = meta.update_step(tf.constant([0.1, -0.3]), tf.constant([1.0, 0.5]),
                                       tf.constant(0.7), state)
    np.testing.assert_allclose(i.numpy(), 0.02, rtol=0.1)
    np.testing.assert_allclose(f.numpy(), _sigmoid(5.0), rtol=0.01)


def test_gradients_reach_every_variable_and_are_first_order():
    keras.utils.set_random_seed(2)
    meta = LSTMMetaOptimizer(_linear_learner(), inner_steps=2, problem="regression")
    episodes = _regression_episodes(seed=1, batch=2)
    _, grads, _ = meta.train_gradients(episodes, global_batch_size=2)
    for variable, grad in zip(meta.trainable_variables, grads, strict=True):
        assert grad is not None and float(tf.norm(grad)) > 0.0, variable.path

    # With gates independent of theta, d theta_T / d theta_0 = 1 when the learner's gradient
    # is an input (first order); second order would give 1 - lr * (Hessian terms).
    _sgd_gates(meta, 0.1)
    kernel = meta.learner.trainable_variables[0]
    with tf.GradientTape() as tape:
        adapted = meta.adapt(episodes["support_x"][0], episodes["support_y"][0])
        total = tf.reduce_sum(adapted[0])
    np.testing.assert_allclose(tape.gradient(total, kernel).numpy(), [[1.0]], rtol=1e-6)


def test_adapting_leaves_the_variables_untouched():
    learner = keras.Sequential([keras.Input((1,)), keras.layers.Dense(4, activation="tanh"),
                                keras.layers.BatchNormalization(), keras.layers.Dense(1)])
    meta = LSTMMetaOptimizer(learner, inner_lr=0.3, inner_steps=2, problem="regression")
    episodes = _regression_episodes(seed=2, batch=2)
    before = [w.copy() for w in meta.get_weights()]
    theta = meta.learner.trainable_variables[0].numpy()
    params = meta.adapt(episodes["support_x"][0], episodes["support_y"][0])
    meta.train_gradients(episodes, global_batch_size=2)
    assert not np.allclose(params[0].numpy(), theta)
    for after, original in zip(meta.get_weights(), before, strict=True):
        np.testing.assert_array_equal(after, original)


def test_zero_steps_give_the_unadapted_model():
    meta = LSTMMetaOptimizer(_linear_learner(), inner_lr=0.1, inner_steps=2, eval_inner_steps=0,
                             problem="regression")
    episodes = _regression_episodes(seed=3, batch=2)
    expected = 0.4 * episodes["query_x"] - 0.2
    np.testing.assert_allclose(meta(episodes, training=False).numpy(), expected, rtol=1e-6)
    assert not np.allclose(meta(episodes, training=True).numpy(), expected, atol=1e-3)


def test_it_learns_a_linear_regression_family():
    keras.utils.set_random_seed(0)
    meta = LSTMMetaOptimizer(_linear_learner(), inner_lr=0.05, inner_steps=3,
                             problem="regression")
    optimizer = keras.optimizers.Adam(learning_rate=0.01)
    optimizer.build(meta.trainable_variables)

    @tf.function
    def train_step(episodes):
        loss, grads, _ = meta.train_gradients(episodes, global_batch_size=8)
        optimizer.apply_gradients(zip(grads, meta.trainable_variables, strict=True))
        return loss

    evaluate = tf.function(lambda e: tf.reduce_mean(meta.episode_losses(e, meta(e))))
    held_out = _regression_episodes(seed=10_000, batch=64)
    start = float(evaluate(held_out))
    for step in range(200):
        train_step(_regression_episodes(seed=step, batch=8))
    assert train_step.experimental_get_tracing_count() == 1
    learned = float(evaluate(held_out))
    assert learned < 0.3 * start
    # The learned update rule, not only the learned initialisation, does the work: plain SGD
    # steps (at the starting rate) from the same learned theta_0 do much worse.
    _sgd_gates(meta, 0.05)
    assert learned < 0.5 * float(evaluate(held_out))


def test_adapt_and_predict_traces_with_unknown_episode_sizes():
    meta = LSTMMetaOptimizer(_linear_learner(), inner_lr=0.1, inner_steps=2,
                             problem="regression")
    serve = tf.function(meta.adapt_and_predict, input_signature=[
        tf.TensorSpec((None, 1)), tf.TensorSpec((None, 1)), tf.TensorSpec((None, 1))])
    episodes = _regression_episodes(seed=4, batch=1)
    served = serve(episodes["support_x"][0], episodes["support_y"][0], episodes["query_x"][0])
    np.testing.assert_allclose(served.numpy(), meta(episodes)[0].numpy(), atol=1e-6)


def test_config_and_keras_file_round_trip(tmp_path):
    keras.utils.set_random_seed(3)
    meta = LSTMMetaOptimizer(_linear_learner(), inner_lr=0.05, inner_steps=2,
                             eval_inner_steps=3, hidden_units=5, forget_bias=4.0,
                             problem="regression")
    episodes = _regression_episodes(seed=5, batch=2)
    expected = meta(episodes).numpy()
    config = LSTMMetaOptimizer.from_config(meta.get_config()).get_config()
    assert (config["hidden_units"], config["forget_bias"], config["inner_lr"],
            config["eval_inner_steps"]) == (5, 4.0, 0.05, 3)
    path = str(tmp_path / "lstm_meta_optimizer.keras")
    meta.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, LSTMMetaOptimizer)
    assert keras.saving.get_registered_name(LSTMMetaOptimizer) == "tf_mtml>LSTMMetaOptimizer"
    np.testing.assert_allclose(loaded(episodes).numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"inner_steps": -1}, "inner_steps"),
    ({"eval_inner_steps": -1}, "eval_inner_steps"),
    ({"inner_lr": 0.0}, "inner_lr"),
    ({"inner_lr": -0.5}, "inner_lr"),
    ({"inner_lr": 1.0}, "inner_lr"),
    ({"hidden_units": 0}, "hidden_units"),
    ({"forget_bias": "large"}, "forget_bias"),
    ({"forget_bias": float("inf")}, "forget_bias"),
    ({"problem": "ranking"}, "problem"),
    ({"dtype": "mixed_float16"}, "dtype"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LSTMMetaOptimizer(_linear_learner(), **kwargs)


def test_mixed_precision_learner_keeps_float32_updates():
    keras.mixed_precision.set_global_policy("mixed_float16")
    learner = keras.Sequential([keras.Input((1,)), keras.layers.Dense(4, activation="tanh"),
                                keras.layers.Dense(1)])
    keras.mixed_precision.set_global_policy("float32")
    meta = LSTMMetaOptimizer(learner, inner_lr=0.1, inner_steps=2, problem="regression")
    assert meta.dtype_policy.name == "float32"
    episodes = _regression_episodes(seed=6, batch=2)
    params = meta.adapt(episodes["support_x"][0], episodes["support_y"][0])
    assert all(p.dtype == tf.float32 for p in params)
    _, grads, _ = meta.train_gradients(episodes, global_batch_size=2)
    assert all(np.all(np.isfinite(g.numpy())) and float(tf.norm(g)) > 0.0 for g in grads)


def test_bad_learners_and_steps_raise():
    with pytest.raises(ValueError, match="not built"):
        LSTMMetaOptimizer(keras.Sequential([keras.layers.Dense(1)]))
    with pytest.raises(ValueError, match="expected a `keras.Model`"):
        LSTMMetaOptimizer("dense")
    episodes = _regression_episodes(seed=0, batch=1)
    with pytest.raises(ValueError, match="steps=-1"):
        LSTMMetaOptimizer(_linear_learner()).adapt(episodes["support_x"][0],
                                                   episodes["support_y"][0], steps=-1)
