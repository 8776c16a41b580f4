"""Reptile: closed-form outer update, mini-batch order, distribution, tracing, saving, errors."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.meta.reptile import Reptile


def _linear_learner(w0: float) -> keras.Model:
    learner = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    learner.set_weights([np.array([[w0]], np.float32)])
    return learner


def _regression_episodes(seed: int, batch: int = 3, shots: int = 4, queries: int = 5) -> dict:
    rng = np.random.default_rng(seed)
    slopes = rng.uniform(-2.0, 2.0, (batch, 1, 1))
    support_x = rng.uniform(-1.5, 1.5, (batch, shots, 1))
    query_x = rng.uniform(-1.5, 1.5, (batch, queries, 1))
    return {"support_x": support_x.astype(np.float32),
            "support_y": (slopes * support_x).astype(np.float32),
            "query_x": query_x.astype(np.float32),
            "query_y": (slopes * query_x).astype(np.float32)}


def _sgd_numpy(w: float, x: np.ndarray, y: np.ndarray, lr: float) -> float:
    """One SGD step on `mean((w x - y)**2)`, in float64."""
    x, y = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
    return w - lr * 2.0 * np.mean(x * (w * x - y))


def _classification_episodes(seed: int, batch: int = 2) -> dict:
    rng = np.random.default_rng(seed)
    return {"support_x": rng.normal(size=(batch, 6, 3)).astype(np.float32),
            "support_y": np.tile(np.repeat(np.arange(3, dtype=np.int32), 2), (batch, 1)),
            "query_x": rng.normal(size=(batch, 3, 3)).astype(np.float32),
            "query_y": np.tile(np.arange(3, dtype=np.int32), (batch, 1))}


def _mlp_learner(batch_norm: bool = False) -> keras.Model:
    layers = [keras.Input((3,)), keras.layers.Dense(8, activation="relu")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    return keras.Sequential([*layers, keras.layers.Dense(3)])


def test_meta_step_equals_closed_form_reptile_update():
    w0, inner_lr, steps, epsilon = 0.3, 0.1, 3, 0.5
    episodes = _regression_episodes(seed=0)
    reptile = Reptile(_linear_learner(w0), inner_lr=inner_lr, inner_steps=steps,
                      problem="regression")
    optimizer = keras.optimizers.SGD(learning_rate=epsilon)
    loss, grads, _ = reptile.train_gradients(episodes, global_batch_size=3)
    optimizer.apply_gradients(zip(grads, reptile.trainable_variables, strict=True))

    adapted = []
    for x, y in zip(episodes["support_x"], episodes["support_y"], strict=True):
        # k SGD steps on a quadratic: w_k = w* + (1 - 2 lr mean(x^2))^k (w0 - w*).
        x, y = x.astype(np.float64).ravel(), y.astype(np.float64).ravel()
        w_star = np.mean(x * y) / np.mean(x * x)
        adapted.append(w_star + (1.0 - 2.0 * inner_lr * np.mean(x * x)) ** steps * (w0 - w_star))
    expected = w0 + epsilon * (np.mean(adapted) - w0)
    np.testing.assert_allclose(grads[0].numpy().ravel(), [w0 - np.mean(adapted)], rtol=1e-5)
    np.testing.assert_allclose(reptile.learner.get_weights()[0].ravel(), [expected], rtol=1e-5)
    query_losses = [np.mean((w * x - y) ** 2) for w, x, y in
                    zip(adapted, episodes["query_x"], episodes["query_y"], strict=True)]
    np.testing.assert_allclose(float(loss), np.mean(query_losses), rtol=1e-5)


def test_minibatches_follow_a_seeded_cyclic_permutation():
    episodes = _regression_episodes(seed=1, batch=1, shots=6)
    x, y = episodes["support_x"][0], episodes["support_y"][0]
    reptile = Reptile(_linear_learner(0.2), inner_lr=0.05, inner_steps=5, inner_batch_size=4,
                      seed=3, problem="regression")
    order = np.concatenate([reptile.minibatch_indices(6, s).numpy() for s in range(3)])
    np.testing.assert_array_equal(np.sort(order[:6]), np.arange(6))
    np.testing.assert_array_equal(order[6:], order[:6])
    other = Reptile(_linear_learner(0.2), inner_batch_size=6, seed=4)
    assert not np.array_equal(other.minibatch_indices(6, 0).numpy(), order[:6])

    w = 0.2
    for s in range(5):
        indices = reptile.minibatch_indices(6, s).numpy()
        w = _sgd_numpy(w, x[indices], y[indices], 0.05)
    adapted = reptile.adapt(x, y)[0].numpy()
    np.testing.assert_allclose(adapted.ravel(), [w], rtol=1e-5)


def test_adapting_leaves_the_variables_untouched():
    keras.utils.set_random_seed(0)
    reptile = Reptile(_mlp_learner(batch_norm=True), inner_lr=0.5, inner_steps=2)
    episodes = _classification_episodes(seed=0)
    before = [w.copy() for w in reptile.learner.get_weights()]
    theta = [v.numpy() for v in reptile.learner.trainable_variables]
    params = reptile.adapt(episodes["support_x"][0], episodes["support_y"][0])
    reptile(episodes)
    reptile.train_gradients(episodes, global_batch_size=2)
    assert not np.allclose(params[0].numpy(), theta[0])
    for after, original in zip(reptile.learner.get_weights(), before, strict=True):
        np.testing.assert_array_equal(after, original)


def test_zero_steps_give_the_unadapted_model_and_a_zero_gradient():
    reptile = Reptile(_mlp_learner(), inner_steps=0)
    episodes = _classification_episodes(seed=1)
    _, grads, predictions = reptile.train_gradients(episodes, global_batch_size=2)
    expected = reptile.learner(episodes["query_x"].reshape(-1, 3)).numpy().reshape(2, 3, 3)
    np.testing.assert_allclose(predictions.numpy(), expected, atol=1e-6)
    for g in grads:
        np.testing.assert_array_equal(g.numpy(), 0.0)


def test_eval_inner_steps_apply_in_inference_only():
    reptile = Reptile(_mlp_learner(), inner_lr=0.5, inner_steps=2, eval_inner_steps=0)
    episodes = _classification_episodes(seed=1)
    unadapted = reptile.learner(episodes["query_x"].reshape(-1, 3)).numpy().reshape(2, 3, 3)
    np.testing.assert_allclose(reptile(episodes, training=False).numpy(), unadapted, atol=1e-6)
    served = reptile.adapt_and_predict(episodes["support_x"][0], episodes["support_y"][0],
                                       episodes["query_x"][0])
    np.testing.assert_allclose(served.numpy(), unadapted[0], atol=1e-6)
    assert not np.allclose(reptile(episodes, training=True).numpy(), unadapted, atol=1e-3)


def test_scale_loss_scales_the_gradients():
    reptile = Reptile(_mlp_learner(), inner_lr=0.3, inner_steps=2)
    episodes = _classification_episodes(seed=2)
    _, grads, _ = reptile.train_gradients(episodes, global_batch_size=4)
    _, scaled, _ = reptile.train_gradients(episodes, global_batch_size=4,
                                           scale_loss=lambda loss: loss * 8.0)
    for g, s in zip(grads, scaled, strict=True):
        np.testing.assert_allclose(s.numpy(), 8.0 * g.numpy(), rtol=1e-5, atol=1e-7)


def test_one_trace_per_compiled_step_and_unknown_episode_sizes():
    reptile = Reptile(_mlp_learner(), inner_lr=0.3, inner_steps=2, inner_batch_size=4)
    optimizer = keras.optimizers.SGD(learning_rate=0.5)
    optimizer.build(reptile.trainable_variables)

    @tf.function
    def train_step(episodes):
        loss, grads, _ = reptile.train_gradients(episodes, global_batch_size=2)
        optimizer.apply_gradients(zip(grads, reptile.trainable_variables, strict=True))
        return loss

    for seed in range(3):
        train_step(_classification_episodes(seed))
    assert train_step.experimental_get_tracing_count() == 1

    serve = tf.function(reptile.adapt_and_predict, input_signature=[
        tf.TensorSpec((None, 3)), tf.TensorSpec((None,), tf.int32), tf.TensorSpec((None, 3))])
    episodes = _classification_episodes(seed=5)
    served = serve(episodes["support_x"][0], episodes["support_y"][0], episodes["query_x"][0])
    np.testing.assert_allclose(served.numpy(), reptile(episodes)[0].numpy(), atol=1e-6)


def test_xla_compiled_step_matches_eager():
    reptile = Reptile(_mlp_learner(), inner_lr=0.3, inner_steps=2)
    episodes = _classification_episodes(seed=3)
    compiled = tf.function(lambda e: reptile.train_gradients(e, 2)[1], jit_compile=True)
    for c, e in zip(compiled(episodes), reptile.train_gradients(episodes, 2)[1], strict=True):
        np.testing.assert_allclose(c.numpy(), e.numpy(), rtol=1e-4, atol=1e-6)


def test_config_and_keras_file_round_trip(tmp_path):
    reptile = Reptile(_mlp_learner(), inner_lr=0.2, inner_steps=3, eval_inner_steps=4,
                      inner_batch_size=4, seed=7)
    episodes = _classification_episodes(seed=4)
    expected = reptile(episodes).numpy()
    clone = Reptile.from_config(reptile.get_config())
    assert (clone.inner_batch_size, clone.seed, clone.eval_inner_steps) == (4, 7, 4)
    path = str(tmp_path / "reptile.keras")
    reptile.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, Reptile)
    assert keras.saving.get_registered_name(Reptile) == "tf_mtml>Reptile"
    np.testing.assert_allclose(loaded(episodes).numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"inner_steps": -1}, "inner_steps"),
    ({"inner_steps": 2.5}, "inner_steps"),
    ({"eval_inner_steps": -3}, "eval_inner_steps"),
    ({"inner_lr": 0.0}, "inner_lr"),
    ({"inner_lr": -0.1}, "inner_lr"),
    ({"inner_lr": float("nan")}, "inner_lr"),
    ({"inner_batch_size": 0}, "inner_batch_size"),
    ({"seed": -1}, "seed"),
    ({"problem": "ranking"}, "problem"),
    ({"dtype": "mixed_float16"}, "dtype"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Reptile(_mlp_learner(), **kwargs)


def test_bad_learners_and_steps_raise():
    with pytest.raises(ValueError, match="not built"):
        Reptile(keras.Sequential([keras.layers.Dense(1)]))
    with pytest.raises(ValueError, match="expected a `keras.Model`"):
        Reptile(keras.layers.Dense(1))
    episodes = _classification_episodes(seed=0)
    with pytest.raises(ValueError, match="steps=-2"):
        Reptile(_mlp_learner()).adapt(episodes["support_x"][0], episodes["support_y"][0], -2)


def test_mixed_precision_learner_keeps_float32_fast_weights():
    keras.mixed_precision.set_global_policy("mixed_float16")
    learner = _mlp_learner()
    keras.mixed_precision.set_global_policy("float32")
    reptile = Reptile(learner, inner_lr=0.3, inner_steps=2)
    assert reptile.dtype_policy.name == "float32"
    episodes = _classification_episodes(seed=6)
    params = reptile.adapt(episodes["support_x"][0], episodes["support_y"][0])
    assert all(p.dtype == tf.float32 for p in params)
    loss, grads, _ = reptile.train_gradients(episodes, global_batch_size=2)
    assert np.isfinite(float(loss)) and all(np.all(np.isfinite(g.numpy())) for g in grads)
    assert float(tf.norm(grads[0])) > 0.0


DISTRIBUTED_SCRIPT = textwrap.dedent("""
    import numpy as np, keras, tensorflow as tf
    from tf_mtml.meta.reptile import Reptile
    from tf_mtml.train.distribute import get_strategy

    strategy = get_strategy("mirrored", num_cpu_devices=2)
    assert strategy.num_replicas_in_sync == 2
    rng = np.random.default_rng(0)
    batches = [{"support_x": rng.normal(size=(4, 6, 3)).astype(np.float32),
                "support_y": np.tile(np.repeat(np.arange(3, dtype=np.int32), 2), (4, 1)),
                "query_x": rng.normal(size=(4, 3, 3)).astype(np.float32),
                "query_y": np.tile(np.arange(3, dtype=np.int32), (4, 1))} for _ in range(2)]
    keras.utils.set_random_seed(0)
    initial = keras.Sequential([keras.Input((3,)), keras.layers.Dense(8, activation="relu"),
                                keras.layers.Dense(3)]).get_weights()

    def run(strategy):
        with strategy.scope():
            learner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(8, "relu"),
                                        keras.layers.Dense(3)])
            learner.set_weights(initial)
            reptile = Reptile(learner, inner_lr=0.3, inner_steps=3, inner_batch_size=4)
            optimizer = keras.optimizers.SGD(learning_rate=0.5)
            optimizer.build(reptile.trainable_variables)

        @tf.function
        def step(episodes):
            def replica_step(episodes):
                loss, grads, _ = reptile.train_gradients(episodes, global_batch_size=4)
                optimizer.apply_gradients(zip(grads, reptile.trainable_variables))
                return loss
            losses = strategy.run(replica_step, args=(episodes,))
            return strategy.reduce("SUM", losses, axis=None)

        dataset = tf.data.Dataset.from_tensor_slices(
            {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}).batch(4)
        losses = [float(step(e)) for e in strategy.experimental_distribute_dataset(dataset)]
        return reptile.learner.get_weights(), losses

    single, single_losses = run(tf.distribute.get_strategy())
    mirrored, mirrored_losses = run(strategy)
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(single, initial))
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(single, mirrored))
    loss_diff = max(abs(a - b) for a, b in zip(single_losses, mirrored_losses))
    print("RESULT", moved, diff, loss_diff)
""")


@pytest.mark.slow
def test_mirrored_two_cpus_matches_single_device():
    result = subprocess.run([sys.executable, "-c", DISTRIBUTED_SCRIPT],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT"))
    moved, diff, loss_diff = map(float, line.split()[1:])
    assert moved > 1e-3
    assert diff < 1e-6
    assert loss_diff < 1e-6
