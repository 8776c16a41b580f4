"""Meta-SGD: learned per-parameter rates (closed form, MAML equivalence, recompute, saving)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.meta.maml import MAML
from tf_mtml.meta.meta_sgd import MetaSGD


def _episodes(seed: int, batch: int = 2, features: int = 2) -> dict:
    rng = np.random.default_rng(seed)
    return {"support_x": rng.normal(size=(batch, 5, features)).astype("float32"),
            "support_y": rng.normal(size=(batch, 5, 1)).astype("float32"),
            "query_x": rng.normal(size=(batch, 4, features)).astype("float32"),
            "query_y": rng.normal(size=(batch, 4, 1)).astype("float32")}


def _mlp(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="tanh"),
                             keras.layers.Dense(1)])


def test_rates_are_trainable_variables_shaped_like_the_parameters():
    meta_sgd = MetaSGD(_mlp(), inner_lr=0.05, problem="regression")
    assert [r.shape for r in meta_sgd.inner_lrs] == [
        v.shape for v in meta_sgd.learner.trainable_variables]
    for rate in meta_sgd.inner_lrs:
        np.testing.assert_array_equal(rate.numpy(), np.full(rate.shape, 0.05, "float32"))
    assert len(meta_sgd.trainable_variables) == 8
    assert {id(r) for r in meta_sgd.inner_lrs} <= {id(v) for v in meta_sgd.trainable_variables}


@pytest.mark.parametrize("first_order", [False, True])
def test_one_parameter_closed_form(first_order):
    """`w' = w - alpha g`, `dL/dalpha = dL/dw' * (-g)`, `dL/dw = dL/dw' * (1 - alpha g')`."""
    w, alpha = -0.3, 0.15
    learner = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    learner.set_weights([np.array([[w]], np.float32)])
    meta_sgd = MetaSGD(learner, inner_lr=alpha, first_order=first_order, problem="regression")
    episode = _episodes(1, batch=1, features=1)
    x, y = episode["support_x"][0, :, 0].astype(np.float64), episode["support_y"][0, :, 0]
    u, v = episode["query_x"][0, :, 0].astype(np.float64), episode["query_y"][0, :, 0]
    support_grad = 2 * np.mean(x * (w * x - y))
    adapted_w = w - alpha * support_grad
    query_grad = 2 * np.mean(u * (adapted_w * u - v))
    expected_w = query_grad * (1.0 if first_order else 1 - alpha * 2 * np.mean(x**2))
    _, grads, _ = meta_sgd.train_gradients(episode, global_batch_size=1)
    by_variable = {id(var): g.numpy().ravel() for var, g in zip(
        meta_sgd.trainable_variables, grads, strict=True)}
    np.testing.assert_allclose(by_variable[id(learner.trainable_variables[0])], [expected_w],
                               rtol=1e-5)
    np.testing.assert_allclose(by_variable[id(meta_sgd.inner_lrs[0])],
                               [-query_grad * support_grad], rtol=1e-5)


def test_equals_maml_when_rates_equal_inner_lr_and_rates_get_gradients():
    episode = _episodes(2)
    meta_sgd = MetaSGD(_mlp(), inner_lr=0.2, inner_steps=2, problem="regression")
    maml = MAML(meta_sgd.learner, inner_lr=0.2, inner_steps=2, problem="regression")
    loss, grads, predictions = meta_sgd.train_gradients(episode, global_batch_size=2)
    maml_loss, maml_grads, maml_predictions = maml.train_gradients(episode, global_batch_size=2)
    np.testing.assert_allclose(predictions, maml_predictions, rtol=1e-6)
    assert float(loss) == pytest.approx(float(maml_loss), rel=1e-6)
    by_variable = dict(zip(map(id, meta_sgd.trainable_variables), grads, strict=True))
    for variable, expected in zip(maml.trainable_variables, maml_grads, strict=True):
        np.testing.assert_allclose(by_variable[id(variable)], expected, rtol=1e-5, atol=1e-7)
    for rate in meta_sgd.inner_lrs:
        assert np.abs(by_variable[id(rate)].numpy()).max() > 1e-4


@pytest.mark.parametrize("meta_batch_mode", ["vectorized_map", "map_fn"])
def test_recompute_gives_the_same_gradients_for_weights_and_rates(meta_batch_mode):
    episode = _episodes(3)
    plain = MetaSGD(_mlp(), inner_lr=0.2, inner_steps=2, problem="regression",
                    meta_batch_mode=meta_batch_mode)
    checkpointed = MetaSGD(plain.learner, inner_lr=0.2, inner_steps=2, problem="regression",
                           meta_batch_mode=meta_batch_mode, recompute=True)
    for rate, other in zip(plain.inner_lrs, checkpointed.inner_lrs, strict=True):
        value = np.random.default_rng(4).uniform(0.05, 0.3, rate.shape).astype("float32")
        rate.assign(value)
        other.assign(value)
    step = tf.function(lambda model: model.train_gradients(episode, global_batch_size=2)[1])
    for g, e in zip(step(checkpointed), step(plain), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("inner_lr", [0.0, -0.01])
def test_any_finite_initial_rate_is_accepted(inner_lr):
    assert MetaSGD(_mlp(), inner_lr=inner_lr).inner_lr == inner_lr


@pytest.mark.parametrize("inner_lr", [float("nan"), float("inf"), "0.1", True])
def test_invalid_initial_rate(inner_lr):
    with pytest.raises(ValueError, match=r"`inner_lr`, expected a finite number"):
        MetaSGD(_mlp(), inner_lr=inner_lr)


def test_config_and_keras_file_round_trip_keep_learned_rates(tmp_path):
    meta_sgd = MetaSGD(_mlp(), inner_lr=0.1, inner_steps=2, problem="regression")
    rng = np.random.default_rng(5)
    for rate in meta_sgd.inner_lrs:
        rate.assign(rng.uniform(-0.2, 0.4, rate.shape).astype("float32"))
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(meta_sgd)))
    assert serialized["registered_name"] == "tf_mtml>MetaSGD"
    clone = keras.saving.deserialize_keras_object(serialized)
    assert type(clone) is MetaSGD
    assert json.loads(json.dumps(clone.get_config())) == json.loads(
        json.dumps(meta_sgd.get_config()))
    meta_sgd.save(tmp_path / "meta_sgd.keras")
    loaded = keras.models.load_model(tmp_path / "meta_sgd.keras")
    for rate, expected in zip(loaded.inner_lrs, meta_sgd.inner_lrs, strict=True):
        np.testing.assert_array_equal(rate.numpy(), expected.numpy())
    episode = _episodes(6)
    np.testing.assert_array_equal(loaded(episode), meta_sgd(episode))
