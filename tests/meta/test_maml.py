"""MAML: meta-gradients (finite differences, closed forms), recompute, tracing, XLA, saving."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.layers.batch_norm import SecondOrderBatchNormalization
from tf_mtml.meta.fast_weights import functional_call
from tf_mtml.meta.maml import MAML


def _episodes(seed: int, problem: str, batch: int = 2, support: int = 6, query: int = 4,
              features: int = 2, dtype: str = "float32") -> dict:
    rng = np.random.default_rng(seed)
    episode = {"support_x": rng.normal(size=(batch, support, features)).astype(dtype),
               "query_x": rng.normal(size=(batch, query, features)).astype(dtype)}
    if problem == "classification":
        episode["support_y"] = rng.integers(0, 3, (batch, support)).astype("int32")
        episode["query_y"] = rng.integers(0, 3, (batch, query)).astype("int32")
    else:
        episode["support_y"] = rng.normal(size=(batch, support, 1)).astype(dtype)
        episode["query_y"] = rng.normal(size=(batch, query, 1)).astype(dtype)
    return episode


def _mlp(outputs: int, features: int = 2, batch_norm: bool = False, seed: int = 0,
         batch_norm_layer=keras.layers.BatchNormalization):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((features,)), keras.layers.Dense(3, activation="tanh")]
    if batch_norm:
        layers.append(batch_norm_layer())
    return keras.Sequential([*layers, keras.layers.Dense(outputs)])


def _outer_loss(maml: MAML, episode: dict) -> tf.Tensor:
    """Mean query loss over the meta-batch, in the learner's precision (float64 here)."""
    predictions = maml(episode, training=True)
    if maml.problem == "classification":
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            episode["query_y"], predictions))
    return tf.reduce_mean((predictions - episode["query_y"]) ** 2)


def _meta_gradients(maml: MAML, episode: dict) -> list:
    with tf.GradientTape() as tape:
        loss = _outer_loss(maml, episode)
    return [g.numpy() for g in tape.gradient(loss, maml.trainable_variables)]


@pytest.mark.parametrize("problem, batch_norm", [
    ("regression", False), ("classification", False), ("classification", True)])
def test_second_order_meta_gradient_matches_float64_finite_differences(problem, batch_norm):
    # With batch_norm, the learner normalises with batch statistics in the inner and outer
    # passes (transductive), so the meta-gradient runs through second derivatives of the
    # batch moments: exact only with SecondOrderBatchNormalization.
    keras.mixed_precision.set_global_policy("float64")
    learner = _mlp(1 if problem == "regression" else 3, batch_norm=batch_norm,
                   batch_norm_layer=SecondOrderBatchNormalization)
    maml = MAML(learner, inner_lr=0.3, inner_steps=2, problem=problem)
    episode = _episodes(0, problem, dtype="float64")
    grads = _meta_gradients(maml, episode)
    outer_loss = tf.function(lambda: _outer_loss(maml, episode))
    eps = 1e-5
    for variable, grad in zip(maml.trainable_variables, grads, strict=True):
        original = variable.numpy()
        numeric = np.zeros_like(original)
        for index in np.ndindex(original.shape):
            losses = []
            for sign in (1.0, -1.0):
                shifted = original.copy()
                shifted[index] += sign * eps
                variable.assign(shifted)
                losses.append(float(outer_loss()))
            numeric[index] = (losses[0] - losses[1]) / (2 * eps)
        variable.assign(original)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_first_order_is_the_query_gradient_at_the_adapted_weights():
    keras.mixed_precision.set_global_policy("float64")
    episode = _episodes(1, "regression", batch=1, dtype="float64")
    first = MAML(_mlp(1), inner_lr=0.3, inner_steps=2, first_order=True, problem="regression")
    second = MAML(first.learner, inner_lr=0.3, inner_steps=2, problem="regression")
    params = first.adapt(episode["support_x"][0], episode["support_y"][0])
    with tf.GradientTape() as tape:
        tape.watch(params)
        predictions = functional_call(first.learner, params, episode["query_x"][0],
                                      training=True)
        loss = tf.reduce_mean((predictions - episode["query_y"][0]) ** 2)
    expected = tape.gradient(loss, params)
    first_grads, second_grads = _meta_gradients(first, episode), _meta_gradients(second, episode)
    for g, e in zip(first_grads, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-10)
    assert max(np.abs(f - s).max() for f, s in zip(first_grads, second_grads, strict=True)) > 1e-3


@pytest.mark.parametrize("first_order", [False, True])
def test_one_parameter_linear_model_closed_form(first_order):
    """`y = w x`: one inner step on `mean((w x - y)**2)`, by hand."""
    w, lr = 0.4, 0.2
    learner = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    learner.set_weights([np.array([[w]], np.float32)])
    maml = MAML(learner, inner_lr=lr, inner_steps=1, first_order=first_order,
                problem="regression")
    episode = _episodes(2, "regression", batch=1, features=1)
    x, y = episode["support_x"][0, :, 0].astype(np.float64), episode["support_y"][0, :, 0]
    u, v = episode["query_x"][0, :, 0].astype(np.float64), episode["query_y"][0, :, 0]
    adapted_w = w - lr * 2 * np.mean(x * (w * x - y))
    query_grad = 2 * np.mean(u * (adapted_w * u - v))
    expected = query_grad if first_order else query_grad * (1 - lr * 2 * np.mean(x**2))
    (adapted,) = maml.adapt(episode["support_x"][0], episode["support_y"][0])
    np.testing.assert_allclose(adapted.numpy().ravel(), [adapted_w], rtol=1e-6)
    loss, (grad,), _ = maml.train_gradients(episode, global_batch_size=1)
    assert float(loss) == pytest.approx(np.mean((adapted_w * u - v) ** 2), rel=1e-5)
    np.testing.assert_allclose(grad.numpy().ravel(), [expected], rtol=1e-5)


def test_adaptation_leaves_learner_variables_untouched_and_uses_batch_statistics():
    maml = MAML(_mlp(3, batch_norm=True), inner_lr=0.5, inner_steps=2)
    episode = _episodes(3, "classification")
    before = [w.numpy().copy() for w in maml.learner.weights]
    params = maml.adapt(episode["support_x"][0], episode["support_y"][0])
    maml.train_gradients(episode, global_batch_size=2)
    maml(episode, training=False)
    for weight, value in zip(maml.learner.weights, before, strict=True):
        np.testing.assert_array_equal(weight.numpy(), value)
    assert any(not np.allclose(p, v) for p, v in zip(params, before, strict=False))
    # Transductive: query predictions normalise with the query batch's statistics.
    unadapted = MAML(maml.learner, inner_steps=0)(episode)[0]
    np.testing.assert_allclose(unadapted, maml.learner(episode["query_x"][0], training=True),
                               rtol=1e-5, atol=1e-6)
    inductive = MAML(maml.learner, inner_steps=0, transductive=False)(episode)[0]
    np.testing.assert_allclose(inductive, maml.learner(episode["query_x"][0], training=False),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(unadapted, inductive, atol=1e-3)


def test_zero_inner_steps_predicts_with_the_unadapted_learner():
    maml = MAML(_mlp(1), inner_lr=0.5, inner_steps=0, eval_inner_steps=3, problem="regression")
    episode = _episodes(4, "regression")
    expected = np.stack([maml.learner(q) for q in episode["query_x"]])
    np.testing.assert_allclose(maml(episode, training=True), expected, rtol=1e-6)
    adapted = maml(episode, training=False)  # eval_inner_steps=3 adapts
    assert not np.allclose(adapted, expected, atol=1e-3)
    np.testing.assert_allclose(adapted[1], maml.adapt_and_predict(
        episode["support_x"][1], episode["support_y"][1], episode["query_x"][1]), rtol=1e-5)


@pytest.mark.parametrize("meta_batch_mode", ["vectorized_map", "map_fn"])
@pytest.mark.parametrize("compiled", [False, True])
def test_recompute_gives_the_same_meta_gradient(meta_batch_mode, compiled):
    episode = _episodes(5, "classification")
    plain = MAML(_mlp(3, batch_norm=True), inner_lr=0.5, inner_steps=3,
                 meta_batch_mode=meta_batch_mode)
    checkpointed = MAML(plain.learner, inner_lr=0.5, inner_steps=3, recompute=True,
                        meta_batch_mode=meta_batch_mode)

    def step(maml):
        return maml.train_gradients(episode, global_batch_size=2)[:2]

    if compiled:
        step = tf.function(step)
    expected_loss, expected = step(plain)
    loss, grads = step(checkpointed)
    assert float(loss) == pytest.approx(float(expected_loss), rel=1e-6)
    for g, e in zip(grads, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


def test_meta_batch_modes_agree():
    episode = _episodes(6, "classification", batch=3)
    vectorized = MAML(_mlp(3), inner_lr=0.5, inner_steps=2)
    mapped = MAML(vectorized.learner, inner_lr=0.5, inner_steps=2, meta_batch_mode="map_fn")
    v_loss, v_grads, v_pred = vectorized.train_gradients(episode, global_batch_size=3)
    m_loss, m_grads, m_pred = mapped.train_gradients(episode, global_batch_size=3)
    np.testing.assert_allclose(v_pred, m_pred, rtol=1e-5, atol=1e-6)
    for v, m in zip(v_grads, m_grads, strict=True):
        np.testing.assert_allclose(v, m, rtol=1e-5, atol=1e-6)


def test_train_step_traces_once_and_reduces_the_query_loss():
    maml = MAML(_mlp(3), inner_lr=0.5, inner_steps=2)
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build(maml.trainable_variables)

    @tf.function
    def train_step(episode):
        loss, grads, _ = maml.train_gradients(episode, global_batch_size=2)
        optimizer.apply_gradients(zip(grads, maml.trainable_variables, strict=True))
        return loss

    for seed in range(3):
        train_step(_episodes(seed, "classification"))
    fixed = _episodes(7, "classification")
    losses = [float(train_step(fixed)) for _ in range(4)]
    assert train_step.experimental_get_tracing_count() == 1
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("recompute", [False, True])
def test_map_fn_path_compiles_with_xla(recompute):
    maml = MAML(_mlp(3, batch_norm=True), inner_lr=0.5, inner_steps=2, recompute=recompute,
                meta_batch_mode="map_fn")
    episode = _episodes(8, "classification")
    xla = tf.function(lambda e: maml.train_gradients(e, 2)[:2], jit_compile=True)
    loss, grads = xla(episode)
    expected_loss, expected, _ = maml.train_gradients(episode, 2)
    assert float(loss) == pytest.approx(float(expected_loss), rel=1e-5)
    for g, e in zip(grads, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("recompute", [False, True])
def test_adapt_and_predict_serves_any_number_of_examples(recompute):
    maml = MAML(_mlp(3), inner_lr=0.5, inner_steps=1, eval_inner_steps=2, recompute=recompute)
    served = tf.function(maml.adapt_and_predict, input_signature=[
        tf.TensorSpec((None, 2), tf.float32), tf.TensorSpec((None,), tf.int32),
        tf.TensorSpec((None, 2), tf.float32)])
    for support, query in ((6, 4), (3, 7)):
        episode = _episodes(9, "classification", support=support, query=query)
        outputs = served(episode["support_x"][0], episode["support_y"][0], episode["query_x"][0])
        assert outputs.shape == (query, 3)
        np.testing.assert_allclose(outputs, maml(episode, training=False)[0], rtol=1e-5,
                                   atol=1e-6)
    assert served.experimental_get_tracing_count() == 1


def test_trainable_variables_are_the_learners():
    maml = MAML(_mlp(3))
    assert [v.path for v in maml.trainable_variables] == [
        v.path for v in maml.learner.trainable_variables]


def _normalized(config: dict) -> dict:
    return json.loads(json.dumps(config))


def test_config_and_keras_file_round_trip(tmp_path):
    maml = MAML(_mlp(3, batch_norm=True), inner_lr=0.25, inner_steps=2, eval_inner_steps=3,
                first_order=True, recompute=True, transductive=False, meta_batch_mode="map_fn",
                name="my_maml")
    serialized = _normalized(keras.saving.serialize_keras_object(maml))
    assert serialized["registered_name"] == "tf_mtml>MAML"
    clone = keras.saving.deserialize_keras_object(serialized)
    assert type(clone) is MAML
    assert _normalized(clone.get_config()) == _normalized(maml.get_config())
    episode = _episodes(10, "classification")
    maml.save(tmp_path / "maml.keras")
    loaded = keras.models.load_model(tmp_path / "maml.keras")
    np.testing.assert_array_equal(loaded(episode, training=False), maml(episode, training=False))
    assert loaded.eval_inner_steps == 3 and loaded.first_order and not loaded.transductive


def test_mixed_precision_learner_keeps_float32_fast_weights():
    keras.mixed_precision.set_global_policy("mixed_float16")
    maml = MAML(_mlp(3), inner_lr=0.5, inner_steps=1)
    assert maml.dtype_policy.name == "float32"
    episode = _episodes(11, "classification")
    params = maml.adapt(episode["support_x"][0], episode["support_y"][0])
    assert all(p.dtype == tf.float32 for p in params)
    loss, grads, _ = maml.train_gradients(episode, global_batch_size=2)
    assert np.isfinite(float(loss)) and all(g.dtype == tf.float32 for g in grads)
    with pytest.raises(ValueError, match="Received: dtype='mixed_float16'"):
        MAML(maml.learner, dtype="mixed_float16")


@pytest.mark.parametrize("kwargs, match", [
    ({"inner_steps": -1}, r"`inner_steps`, expected a non-negative integer.*inner_steps=-1"),
    ({"inner_steps": 1.5}, r"inner_steps=1.5"),
    ({"eval_inner_steps": -2}, r"`eval_inner_steps`.*eval_inner_steps=-2"),
    ({"inner_lr": 0.0}, r"`inner_lr`, expected a positive number.*inner_lr=0.0"),
    ({"inner_lr": -0.1}, r"inner_lr=-0.1"),
    ({"inner_lr": float("nan")}, r"inner_lr=nan"),
    ({"first_order": 1}, r"`first_order`, expected a bool.*first_order=1"),
    ({"meta_batch_mode": "pmap"}, r"`meta_batch_mode`.*meta_batch_mode='pmap'"),
    ({"problem": "ranking"}, r"`problem`.*problem='ranking'"),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MAML(_mlp(3), **kwargs)


def test_unbuilt_learner_is_rejected():
    with pytest.raises(ValueError, match=r"`learner`, expected a built Keras model"):
        MAML(keras.Sequential([keras.layers.Dense(3)]))


def test_inputs_that_do_not_match_the_learner_are_rejected():
    maml = MAML(_mlp(3))
    good = _episodes(12, "classification")
    with pytest.raises(ValueError, match=r"`support_x`.*support_x.shape=\(2, 6, 5\)"):
        maml({**good, "support_x": np.zeros((2, 6, 5), "float32")})
    with pytest.raises(ValueError, match=r"`query_x`.*query_x.shape=\(4, 2\)"):
        maml({**good, "query_x": good["query_x"][0]})
    with pytest.raises(ValueError, match=r"`support_y`.*support_y.shape=\(2, 5\)"):
        maml({**good, "support_y": good["support_y"][:, :5]})
    with pytest.raises(ValueError, match=r"`x`.*x.shape=\(4, 3\)"):
        maml.predict_with(maml.adapt(good["support_x"][0], good["support_y"][0]),
                          np.zeros((4, 3), "float32"))
    with pytest.raises(ValueError, match=r"`steps`.*steps=-1"):
        maml.adapt(good["support_x"][0], good["support_y"][0], steps=-1)
    regression = MAML(_mlp(1), problem="regression")
    with pytest.raises(ValueError, match=r"regression targets of shape \(6, 1\)"):
        regression.adapt(good["support_x"][0], np.zeros((6,), "float32"))
