"""Tests of tf_mtml.meta.prototypical."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.layers.helpers import assert_keras_file_round_trip
from tf_mtml.meta.backbones import conv4
from tf_mtml.meta.base import episode_scores
from tf_mtml.meta.prototypical import PrototypicalNetwork, support_one_hot
from tf_mtml.serving.export import export_saved_model
from tf_mtml.serving.session_loader import run_signature_with_session_loader

DIM = 4
RNG = np.random.default_rng(0)


def _linear_encoder(dim=DIM, units=3):
    encoder = keras.Sequential([keras.Input((dim,)), keras.layers.Dense(units)])
    encoder.set_weights([RNG.normal(size=(dim, units)).astype("float32"),
                         RNG.normal(size=(units,)).astype("float32")])
    return encoder


def _episode(batch=2, ways=3, shots=2, queries=2, dim=DIM, shuffle=True):
    """Random features; support labels shuffled within each episode (order is not assumed)."""
    support_y = np.tile(np.repeat(np.arange(ways), shots), (batch, 1))
    if shuffle:
        support_y = np.stack([RNG.permutation(row) for row in support_y])
    return {
        "support_x": RNG.normal(size=(batch, ways * shots, dim)).astype("float32"),
        "support_y": support_y.astype("int32"),
        "query_x": RNG.normal(size=(batch, ways * queries, dim)).astype("float32"),
        "query_y": np.tile(np.repeat(np.arange(ways), queries), (batch, 1)).astype("int32"),
    }


def assert_config_round_trip(model: keras.Model) -> keras.Model:
    """JSON round trip of `model`; configs compared as JSON (the encoder's holds tuples)."""
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
    clone = keras.saving.deserialize_keras_object(serialized)
    assert type(clone) is type(model)
    assert json.dumps(clone.get_config()) == json.dumps(model.get_config())
    return clone


def traced_output_shape(model: keras.Model, episode: dict) -> list:
    """The static output shape of `model` traced on the (static) shapes of `episode`."""
    spec = {k: tf.TensorSpec(v.shape, v.dtype) for k, v in episode.items()}
    traced = tf.function(lambda e: model(e)).get_concrete_function(spec)
    return traced.structured_outputs.shape.as_list()


def _numpy_prototypes(embeddings, labels, ways):
    return np.stack([embeddings[labels == n].mean(axis=0) for n in range(ways)])


def _numpy_logits(model, episode, ways, distance="squared_euclidean"):
    kernel, bias = (w.astype("float64") for w in model.encoder.get_weights())
    logits = []
    for sx, sy, qx in zip(episode["support_x"], episode["support_y"], episode["query_x"],
                          strict=True):
        prototypes = _numpy_prototypes(sx @ kernel + bias, sy, ways)
        query = qx @ kernel + bias
        if distance == "cosine":
            q = query / np.linalg.norm(query, axis=-1, keepdims=True)
            p = prototypes / np.linalg.norm(prototypes, axis=-1, keepdims=True)
            logits.append(q @ p.T - 1.0)
        else:
            logits.append(-((query[:, None, :] - prototypes[None]) ** 2).sum(-1))
    return np.stack(logits)


def test_prototypes_are_per_class_means():
    model = PrototypicalNetwork(_linear_encoder())
    embeddings = RNG.normal(size=(2, 9, 5)).astype("float32")
    labels = np.stack([RNG.permutation(np.repeat(np.arange(3), 3)) for _ in range(2)])
    prototypes = model.prototypes(embeddings, labels, 3).numpy()
    for b in range(2):
        np.testing.assert_allclose(prototypes[b], _numpy_prototypes(embeddings[b], labels[b], 3),
                                   rtol=1e-6, atol=1e-6)
    unbatched = model.prototypes(embeddings[0], labels[0]).numpy()  # N inferred
    np.testing.assert_allclose(unbatched, prototypes[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("distance", ["squared_euclidean", "cosine"])
def test_logits_are_negative_distances(distance):
    model = PrototypicalNetwork(_linear_encoder(), distance=distance)
    episode = _episode()
    logits = model(episode)
    assert logits.dtype == tf.float32 and tuple(logits.shape) == (2, 6, 3)
    np.testing.assert_allclose(logits.numpy(), _numpy_logits(model, episode, 3, distance),
                               rtol=1e-5, atol=1e-5)


def test_embed_flattens_to_float32():
    encoder = keras.Sequential([keras.Input((2, 3)), keras.layers.Dense(4)])
    embeddings = PrototypicalNetwork(encoder).embed(np.ones((5, 2, 3), "float32"))
    assert embeddings.dtype == tf.float32 and tuple(embeddings.shape) == (5, 8)


def test_permuting_the_support_set_keeps_predictions():
    model = PrototypicalNetwork(_linear_encoder())
    episode = _episode()
    order = RNG.permutation(6)
    permuted = {**episode, "support_x": episode["support_x"][:, order],
                "support_y": episode["support_y"][:, order]}
    np.testing.assert_allclose(model(permuted).numpy(), model(episode).numpy(), rtol=1e-5,
                               atol=1e-5)


def test_num_ways_makes_the_class_dimension_static():
    static = PrototypicalNetwork(_linear_encoder(), num_ways=3)
    assert traced_output_shape(static, _episode()) == [2, 6, 3]
    assert traced_output_shape(PrototypicalNetwork(_linear_encoder()), _episode()) == [2, 6, None]


def _gaussian_episodes(rng, batch, ways=5, shots=2, queries=3, dim=16, informative=2):
    """Classes differ in `informative` dims only; the others carry large shared noise."""
    means = np.zeros((batch, ways, dim))
    means[..., :informative] = rng.normal(scale=2.0, size=(batch, ways, informative))
    scale = np.where(np.arange(dim) < informative, 0.3, 4.0)

    def draw(count):
        x = np.repeat(means, count, axis=1) + scale * rng.normal(size=(batch, ways * count, dim))
        labels = np.tile(np.repeat(np.arange(ways), count), (batch, 1))
        return x.astype("float32"), labels.astype("int32")

    (support_x, support_y), (query_x, query_y) = draw(shots), draw(queries)
    return {"support_x": support_x, "support_y": support_y, "query_x": query_x,
            "query_y": query_y}


def test_training_on_gaussian_clusters_beats_chance():
    keras.utils.set_random_seed(0)
    model = PrototypicalNetwork(keras.Sequential([keras.Input((16,)), keras.layers.Dense(8)]),
                                num_ways=5)
    rng = np.random.default_rng(0)
    held_out = _gaussian_episodes(np.random.default_rng(1), batch=64)

    def accuracy():
        return float(np.mean(episode_scores("classification", held_out["query_y"],
                                            model(held_out))))

    before = accuracy()
    optimizer = keras.optimizers.Adam(0.05)

    @tf.function
    def step(episode):
        loss, gradients, _ = model.train_gradients(episode, global_batch_size=8)
        optimizer.apply(gradients, model.trainable_variables)
        return loss

    for _ in range(60):
        step(_gaussian_episodes(rng, batch=8))
    after = accuracy()
    assert before < 0.35, before  # the noise dimensions dominate a random projection
    assert after > 0.8, after  # chance is 0.2


SPECS = [tf.TensorSpec((None, DIM), tf.float32), tf.TensorSpec((None,), tf.int32),
         tf.TensorSpec((None, DIM), tf.float32)]


def test_few_shot_logits_traces_once_for_any_ways_and_shots():
    model = PrototypicalNetwork(_linear_encoder())
    traces = []

    @tf.function(input_signature=SPECS)
    def few_shot(support_x, support_y, query_x):
        traces.append(1)
        return model.few_shot_logits(support_x, support_y, query_x)

    for ways, shots, queries in [(3, 2, 4), (5, 1, 2)]:
        episode = _episode(batch=1, ways=ways, shots=shots, queries=queries)
        logits = few_shot(episode["support_x"][0], episode["support_y"][0],
                          episode["query_x"][0])
        assert tuple(logits.shape) == (ways * queries, ways)
        np.testing.assert_allclose(logits.numpy(), _numpy_logits(model, episode, ways)[0],
                                   rtol=1e-5, atol=1e-5)
    assert len(traces) == 1


def test_few_shot_signature_runs_under_the_session_loader(tmp_path):
    model = PrototypicalNetwork(_linear_encoder())
    signature = dict(zip(("support_x", "support_y", "query_x"), SPECS, strict=True))

    def serve(inputs):
        return {"logits": model.few_shot_logits(inputs["support_x"], inputs["support_y"],
                                                inputs["query_x"])}

    first = _episode(batch=1)
    model.few_shot_logits(first["support_x"][0], first["support_y"][0], first["query_x"][0])
    export_dir = export_saved_model(model, str(tmp_path), input_signature=signature,
                                    serve_fn=serve)
    for ways, shots in [(2, 3), (4, 1)]:
        episode = _episode(batch=1, ways=ways, shots=shots, queries=1)
        inputs = {k: episode[k][0] for k in signature}
        served = run_signature_with_session_loader(export_dir, inputs)["logits"]
        np.testing.assert_allclose(served, _numpy_logits(model, episode, ways)[0], rtol=1e-5,
                                   atol=1e-5)


def test_config_and_keras_file_round_trips(tmp_path):
    model = PrototypicalNetwork(_linear_encoder(), distance="cosine", num_ways=3, name="proto")
    episode = _episode()
    model(episode)
    assert keras.saving.get_registered_name(type(model)) == "tf_mtml>PrototypicalNetwork"
    clone = assert_config_round_trip(model)
    assert (clone.distance, clone.num_ways, clone.name) == ("cosine", 3, "proto")
    assert_keras_file_round_trip(model, episode, tmp_path)


def test_conv4_episode_under_mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = PrototypicalNetwork(conv4(filters=8), num_ways=2)
    episode = {"support_x": RNG.normal(size=(1, 4, 28, 28, 1)).astype("float32"),
               "support_y": np.array([[0, 1, 1, 0]], "int32"),
               "query_x": RNG.normal(size=(1, 2, 28, 28, 1)).astype("float32"),
               "query_y": np.array([[0, 1]], "int32")}
    loss, gradients, logits = model.train_gradients(episode, global_batch_size=1)
    assert logits.dtype == tf.float32 and tuple(logits.shape) == (1, 2, 2)
    assert np.isfinite(loss.numpy()) and all(g is not None for g in gradients)


@pytest.mark.parametrize("labels,num_ways,match", [
    ([[0, 1, 2, 3, 0, 1]], 3, "larger label"),
    ([[0, 1, -1, 2, 0, 1]], None, "negative label"),
    ([[0, 1, 3, 3, 0, 1]], None, "at least one support example"),
])
def test_labels_outside_0_to_n_minus_1_raise(labels, num_ways, match):
    model = PrototypicalNetwork(_linear_encoder(), num_ways=num_ways)
    episode = {**_episode(batch=1), "support_y": np.array(labels, "int32")}
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        model(episode)


def test_float_labels_must_be_integral():
    np.testing.assert_array_equal(support_one_hot(np.array([1.0, 0.0])).numpy(), [[0, 1], [1, 0]])
    with pytest.raises(tf.errors.InvalidArgumentError, match="integer class labels"):
        support_one_hot(np.array([0.0, 1.5, 1.0]))


def test_support_one_hot_checks_at_run_time_in_a_graph():
    one_hot = tf.function(support_one_hot, input_signature=[tf.TensorSpec((None,), tf.int32)])
    np.testing.assert_array_equal(one_hot(tf.constant([1, 0, 1])).numpy(),
                                  [[0, 1], [1, 0], [0, 1]])
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least one support example"):
        one_hot(tf.constant([0, 2]))


@pytest.mark.parametrize("change,match", [
    ({"support_y": np.zeros((6,), "int32")}, "support_y"),
    ({"support_y": np.zeros((2, 5), "int32")}, "one label per support example"),
    ({"query_x": np.zeros((2, 6, DIM, 1), "float32")}, "query_x"),
    ({"support_x": np.zeros((2, 6), "float32")}, "support_x"),
])
def test_inconsistent_episode_shapes_raise(change, match):
    model = PrototypicalNetwork(_linear_encoder())
    with pytest.raises(ValueError, match=match):
        model({**_episode(), **change})


def test_few_shot_logits_rejects_batched_inputs():
    model = PrototypicalNetwork(_linear_encoder())
    episode = _episode(batch=1)
    with pytest.raises(ValueError, match=r"support_y"):
        model.few_shot_logits(episode["support_x"][0], episode["support_y"], episode["query_x"][0])


def test_missing_episode_key_or_non_dict_raises():
    episode = _episode()
    del episode["query_x"]
    model = PrototypicalNetwork(_linear_encoder())
    with pytest.raises(ValueError, match="Missing: \\['query_x'\\]"):
        model(episode)
    with pytest.raises(ValueError, match="episode dict"):
        model(episode["support_x"])
    with pytest.raises(ValueError, match="episode dict"):
        model.build((None, DIM))


@pytest.mark.parametrize("kwargs,match", [
    ({"distance": "l1"}, "distance"),
    ({"num_ways": 0}, "num_ways"),
    ({"encoder": "conv4"}, "encoder"),
])
def test_bad_constructor_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PrototypicalNetwork(**{"encoder": _linear_encoder(), **kwargs})
