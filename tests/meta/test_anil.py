"""ANIL: head-only inner loop (frozen body, meta-gradient, head selection, saving, errors)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.meta.anil import ANIL
from tf_mtml.meta.maml import MAML


def _episodes(seed: int, dtype: str = "float32") -> dict:
    rng = np.random.default_rng(seed)
    return {"support_x": rng.normal(size=(2, 6, 2)).astype(dtype),
            "support_y": rng.integers(0, 3, (2, 6)).astype("int32"),
            "query_x": rng.normal(size=(2, 4, 2)).astype(dtype),
            "query_y": rng.integers(0, 3, (2, 4)).astype("int32")}


def _learner(seed: int = 0) -> keras.Model:
    """Dense -> ReLU layer (no weights) -> Dense -> Dense head."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((2,)), keras.layers.Dense(3), keras.layers.ReLU(),
                             keras.layers.Dense(3, activation="tanh"), keras.layers.Dense(3)])


def test_head_is_the_last_weighted_layers():
    learner = _learner()
    assert ANIL(learner).adapted_indices == (4, 5)
    assert ANIL(learner, num_head_layers=2).adapted_indices == (2, 3, 4, 5)
    head = learner.layers[-1].trainable_variables
    assert ANIL(learner, head_variables=head).adapted_indices == (4, 5)
    assert ANIL(learner, head_variables=[4]).adapted_indices == (4,)


def test_inner_loop_adapts_only_the_head():
    anil = ANIL(_learner(), inner_lr=0.5, inner_steps=3)
    episode = _episodes(0)
    params = anil.adapt(episode["support_x"][0], episode["support_y"][0])
    for index, (param, variable) in enumerate(zip(params, anil.learner.trainable_variables,
                                                  strict=True)):
        if index in anil.adapted_indices:
            assert not np.allclose(param.numpy(), variable.numpy(), atol=1e-4)
        else:
            np.testing.assert_array_equal(param.numpy(), variable.numpy())


def test_whole_model_as_head_is_maml():
    episode = _episodes(1)
    anil = ANIL(_learner(), inner_lr=0.5, inner_steps=2, num_head_layers=3)
    maml = MAML(anil.learner, inner_lr=0.5, inner_steps=2)
    loss, grads, _ = anil.train_gradients(episode, global_batch_size=2)
    maml_loss, maml_grads, _ = maml.train_gradients(episode, global_batch_size=2)
    assert float(loss) == pytest.approx(float(maml_loss), rel=1e-6)
    for g, e in zip(grads, maml_grads, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-7)


def test_meta_gradient_of_body_and_head_matches_float64_finite_differences():
    keras.mixed_precision.set_global_policy("float64")
    anil = ANIL(_learner(), inner_lr=0.5, inner_steps=2)
    episode = _episodes(2, dtype="float64")

    def outer_loss():
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            episode["query_y"], anil(episode, training=True)))

    with tf.GradientTape() as tape:
        loss = outer_loss()
    grads = tape.gradient(loss, anil.trainable_variables)
    compiled, eps = tf.function(outer_loss), 1e-5
    for variable, grad in zip(anil.trainable_variables, grads, strict=True):
        original = variable.numpy()
        numeric = np.zeros_like(original)
        for index in np.ndindex(original.shape):
            losses = []
            for sign in (1.0, -1.0):
                shifted = original.copy()
                shifted[index] += sign * eps
                variable.assign(shifted)
                losses.append(float(compiled()))
            numeric[index] = (losses[0] - losses[1]) / (2 * eps)
        variable.assign(original)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_config_and_keras_file_round_trip(tmp_path):
    learner = _learner()
    anil = ANIL(learner, inner_lr=0.3, inner_steps=2,
                head_variables=learner.layers[-1].trainable_variables)
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(anil)))
    assert serialized["registered_name"] == "tf_mtml>ANIL"
    clone = keras.saving.deserialize_keras_object(serialized)
    assert type(clone) is ANIL and clone.adapted_indices == anil.adapted_indices
    assert json.loads(json.dumps(clone.get_config())) == json.loads(
        json.dumps(anil.get_config()))
    anil.save(tmp_path / "anil.keras")
    loaded = keras.models.load_model(tmp_path / "anil.keras")
    episode = _episodes(3)
    np.testing.assert_array_equal(loaded(episode), anil(episode))


@pytest.mark.parametrize("kwargs, match", [
    ({"num_head_layers": 0}, r"`num_head_layers`, expected an integer from 1 to 3.*=0"),
    ({"num_head_layers": 4}, r"num_head_layers=4"),
    ({"num_head_layers": True}, r"num_head_layers=True"),
    ({"head_variables": [6]}, r"`head_variables`.*indices \(0 to 5\).*head_variables=\[6\]"),
    ({"head_variables": [keras.Variable(1.0)]}, r"`head_variables`, expected"),
    ({"head_variables": []}, r"`head_variables`, expected a non-empty list"),
    ({"num_head_layers": 1, "head_variables": [0]}, r"both `num_head_layers` and"),
])
def test_invalid_head_selection(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ANIL(_learner(), **kwargs)
