"""Tests of tf_mtml.meta.matching."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.layers.helpers import assert_keras_file_round_trip
from tests.meta.test_prototypical import (
    SPECS,
    _episode,
    _linear_encoder,
    assert_config_round_trip,
    traced_output_shape,
)
from tf_mtml.meta.matching import MatchingNetwork

RNG = np.random.default_rng(1)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _lstm_step(x, h, c, weights):
    """Keras LSTM cell (gates i, f, c, o) in float64."""
    kernel, recurrent_kernel, bias = (w.astype("float64") for w in weights)
    i, f, g, o = np.split(x @ kernel + h @ recurrent_kernel + bias, 4, axis=-1)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    return _sigmoid(o) * np.tanh(c), c


def _lstm_sequence(xs, weights):
    h = c = np.zeros(xs.shape[-1])
    outputs = []
    for x in xs:
        h, c = _lstm_step(x, h, c, weights)
        outputs.append(h)
    return np.stack(outputs)


def _numpy_log_probs(model, episode, ways):
    """The paper's formula, one episode at a time, in float64."""
    kernel, bias = (w.astype("float64") for w in model.encoder.get_weights())
    result = []
    for sx, sy, qx in zip(episode["support_x"], episode["support_y"], episode["query_x"],
                          strict=True):
        support, query = sx @ kernel + bias, qx @ kernel + bias
        if model.fce:
            lstm = model.support_lstm
            forward = _lstm_sequence(support, lstm.forward_layer.get_weights())
            backward = _lstm_sequence(support[::-1], lstm.backward_layer.get_weights())[::-1]
            support = support + forward + backward
            h_hat = c = np.zeros_like(query)
            for _ in range(model.fce_steps):
                h = h_hat + query
                readout = _softmax(h @ support.T) @ support
                h_hat, c = _lstm_step(query, h + readout, c, model.query_cell.get_weights())
            query = h_hat + query
        attention = _softmax(_normalize(query) @ _normalize(support).T)
        result.append(np.log(attention @ np.eye(ways)[sy]))
    return np.stack(result)


@pytest.mark.parametrize("fce", [False, True])
def test_log_probabilities_match_numpy_reference(fce):
    model = MatchingNetwork(_linear_encoder(), fce=fce, fce_steps=2)
    episode = _episode()
    model(episode)
    for weight in model.weights:  # non-default LSTM weights, so every term matters
        weight.assign(RNG.normal(scale=0.5, size=weight.shape).astype("float32"))
    log_probs = model(episode)
    assert log_probs.dtype == tf.float32 and tuple(log_probs.shape) == (2, 6, 3)
    np.testing.assert_allclose(log_probs.numpy(), _numpy_log_probs(model, episode, 3),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.exp(log_probs.numpy()).sum(-1), 1.0, rtol=1e-6)


def test_shared_cross_entropy_is_negative_log_probability():
    model = MatchingNetwork(_linear_encoder())
    episode = _episode()
    log_probs = model(episode).numpy()
    picked = np.take_along_axis(log_probs, episode["query_y"][..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(model.episode_losses(episode, log_probs).numpy(),
                               -picked.mean(-1), rtol=1e-5)


def test_permuting_the_support_set_keeps_predictions():
    model = MatchingNetwork(_linear_encoder())
    episode = _episode()
    order = RNG.permutation(6)
    permuted = {**episode, "support_x": episode["support_x"][:, order],
                "support_y": episode["support_y"][:, order]}
    np.testing.assert_allclose(model(permuted).numpy(), model(episode).numpy(), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("fce", [False, True])
def test_num_ways_makes_the_class_dimension_static(fce):
    assert traced_output_shape(MatchingNetwork(_linear_encoder(), fce=fce, num_ways=3),
                               _episode()) == [2, 6, 3]


def test_fce_gradients_reach_every_weight():
    model = MatchingNetwork(_linear_encoder(), fce=True)
    loss, gradients, _ = model.train_gradients(_episode(), global_batch_size=2)
    assert np.isfinite(loss.numpy())
    assert len(gradients) == 2 + 2 * 3 + 3  # encoder, two support LSTMs, query cell
    assert all(g is not None and np.any(g.numpy() != 0) for g in gradients)


@pytest.mark.parametrize("fce", [False, True])
def test_few_shot_logits_traces_once_for_any_ways_and_shots(fce):
    model = MatchingNetwork(_linear_encoder(), fce=fce)
    model(_episode())  # a served model is trained, hence built: no variables made in the trace
    traces = []

    @tf.function(input_signature=SPECS)
    def few_shot(support_x, support_y, query_x):
        traces.append(1)
        return model.few_shot_logits(support_x, support_y, query_x)

    for ways, shots in [(3, 2), (5, 1)]:
        episode = _episode(batch=1, ways=ways, shots=shots, queries=2)
        log_probs = few_shot(episode["support_x"][0], episode["support_y"][0],
                             episode["query_x"][0])
        np.testing.assert_allclose(log_probs.numpy(), _numpy_log_probs(model, episode, ways)[0],
                                   rtol=1e-5, atol=1e-5)
    assert len(traces) == 1


def test_config_and_keras_file_round_trips(tmp_path):
    model = MatchingNetwork(_linear_encoder(), fce=True, fce_steps=3, num_ways=3)
    episode = _episode()
    model(episode)
    assert keras.saving.get_registered_name(type(model)) == "tf_mtml>MatchingNetwork"
    clone = assert_config_round_trip(model)
    assert (clone.fce, clone.fce_steps, clone.num_ways) == (True, 3, 3)
    assert_keras_file_round_trip(model, episode, tmp_path)


def test_fce_under_mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = MatchingNetwork(_linear_encoder(), fce=True)
    log_probs = model(_episode())
    assert log_probs.dtype == tf.float32
    assert model.query_cell.compute_dtype == "float16"
    np.testing.assert_allclose(np.exp(log_probs.numpy()).sum(-1), 1.0, rtol=1e-5)


def test_labels_outside_0_to_n_minus_1_raise():
    model = MatchingNetwork(_linear_encoder(), num_ways=3)
    episode = {**_episode(batch=1), "support_y": np.array([[0, 1, 2, 5, 0, 1]], "int32")}
    with pytest.raises(tf.errors.InvalidArgumentError, match="larger label"):
        model(episode)


def test_rank_mismatch_raises():
    with pytest.raises(ValueError, match="query_x"):
        MatchingNetwork(_linear_encoder())({**_episode(), "query_x": np.zeros((2, 6, 4, 1))})


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="fce_steps"):
        MatchingNetwork(_linear_encoder(), fce_steps=0)
    encoder = keras.Sequential([keras.Input((None,)), keras.layers.Lambda(lambda x: 2.0 * x)])
    with pytest.raises(ValueError, match="static output size"):
        MatchingNetwork(encoder, fce=True).build({"support_x": (2, 6, None)})
