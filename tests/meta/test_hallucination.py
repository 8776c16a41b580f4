"""Tests of tf_mtml.meta.hallucination."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.meta.hallucination import HallucinatingProtoNet

RNG = np.random.default_rng(0)
DIM, FEATURES, NOISE = 4, 3, 2


def _episode(rng, support_y=((0, 1, 2, 0, 1, 2), (2, 2, 1, 0, 2, 0)), queries=4):
    """Two 3-way episodes; the second has unequal shots (2, 1 and 3 examples of classes 0-2)."""
    support_y = np.asarray(support_y, "int32")
    batch, num_support = support_y.shape
    return {"support_x": rng.normal(size=(batch, num_support, DIM)).astype("float32"),
            "support_y": support_y,
            "query_x": rng.normal(size=(batch, queries, DIM)).astype("float32"),
            "query_y": rng.integers(0, 3, size=(batch, queries)).astype("int32")}


def _linear(units, kernel=None, bias=None):
    """A Dense model with the given (or random) kernel and bias."""
    layer = keras.layers.Dense(units)
    model = keras.Sequential([layer])
    rows = kernel.shape[0] if kernel is not None else DIM
    model.build((None, rows))
    layer.kernel.assign(RNG.normal(size=(rows, units)) if kernel is None else kernel)
    layer.bias.assign(RNG.normal(size=(units,)) if bias is None else bias)
    return model


def _features(encoder, episode):
    """Support features `(B, S, FEATURES)` computed by the model."""
    features = encoder(episode["support_x"].reshape(-1, DIM))
    return np.asarray(features).reshape(*episode["support_y"].shape, FEATURES)


def _numpy_features(encoder, x):
    kernel, bias = (np.asarray(w, "float64") for w in encoder.weights)
    return x.astype("float64") @ kernel + bias


def _numpy_prototypes(features, labels, hallucinated):
    """Means of the real features of each class and its rows of `hallucinated` `(N, H, D)`."""
    return np.stack([np.concatenate([features[labels == c], hallucinated[c]]).mean(0)
                     for c in range(3)])


def test_prototypes_average_real_and_forced_generator_outputs():
    episode = _episode(RNG)
    constant = np.array([5.0, -1.0, 2.0])
    # Zero kernel: the generator outputs `constant` whatever its input (seeds and noise).
    generator = _linear(FEATURES, np.zeros((FEATURES + NOISE, FEATURES)), constant)
    encoder = _linear(FEATURES)
    learner = HallucinatingProtoNet(encoder, num_ways=3, num_hallucinated=2,
                                    generator=generator, noise_dim=NOISE, seed=0)
    prototypes = np.asarray(learner.augmented_prototypes(
        _features(encoder, episode), episode["support_y"], 3, training=True))
    for b in range(2):
        expected = _numpy_prototypes(_numpy_features(encoder, episode["support_x"][b]),
                                     episode["support_y"][b], np.tile(constant, (3, 2, 1)))
        np.testing.assert_allclose(prototypes[b], expected, rtol=1e-5, atol=1e-5)


def _copying_generator():
    """Outputs the seed feature: kernel `[I; 0]` over `[feature ; noise]`."""
    kernel = np.concatenate([np.eye(FEATURES), np.zeros((NOISE, FEATURES))])
    return _linear(FEATURES, kernel, np.zeros(FEATURES))


def test_deterministic_inference_seeds_cycle_through_each_class():
    episode = _episode(RNG)
    encoder = _linear(FEATURES)
    learner = HallucinatingProtoNet(encoder, num_ways=3, num_hallucinated=4,
                                    generator=_copying_generator(), noise_dim=NOISE,
                                    deterministic_inference=True)
    one_hot = np.eye(3, dtype="float32")[episode["support_y"]]
    hallucinated = np.asarray(learner.hallucinate(_features(encoder, episode), one_hot))
    logits = np.asarray(learner(episode))
    for b in range(2):
        features = _numpy_features(encoder, episode["support_x"][b])
        labels = episode["support_y"][b]
        # Class c's h-th hallucination copies its (h mod K_c)-th support example.
        expected = np.stack([features[labels == c][np.arange(4) % (labels == c).sum()]
                             for c in range(3)])
        np.testing.assert_allclose(hallucinated[b], expected, rtol=1e-5, atol=1e-5)
        prototypes = _numpy_prototypes(features, labels, expected)
        query = _numpy_features(encoder, episode["query_x"][b])
        distances = ((query[:, None] - prototypes[None]) ** 2).sum(-1)
        np.testing.assert_allclose(logits[b], -distances, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(learner(episode)), logits)


def test_random_seeds_come_from_the_right_class_and_vary():
    episode = _episode(RNG)
    encoder = _linear(FEATURES)
    learner = HallucinatingProtoNet(encoder, num_ways=3, num_hallucinated=16,
                                    generator=_copying_generator(), noise_dim=NOISE, seed=3)
    features = _features(encoder, episode)
    one_hot = np.eye(3, dtype="float32")[episode["support_y"]]
    first = np.asarray(learner.hallucinate(features, one_hot, training=True))
    second = np.asarray(learner.hallucinate(features, one_hot, training=True))
    assert not np.array_equal(first, second)
    for b in range(2):
        for c in range(3):
            own = features[b][episode["support_y"][b] == c]
            distance = np.abs(first[b, c][:, None] - own[None]).max(-1).min(-1)
            np.testing.assert_allclose(distance, 0.0, atol=1e-6)
    # Class 2 of episode 1 has 3 support examples: 16 draws use more than one of them.
    assert len(np.unique(first[1, 2].round(5), axis=0)) > 1


def test_generator_receives_gradients_from_the_query_loss():
    learner = HallucinatingProtoNet(_linear(FEATURES), num_ways=3, num_hallucinated=2,
                                    noise_dim=NOISE, generator_units=(5,), seed=0)
    _, grads, _ = learner.train_gradients(_episode(RNG), global_batch_size=2)
    generator_ids = {id(v) for v in learner.generator.trainable_variables}
    assert len(generator_ids) == 4
    for variable, grad in zip(learner.trainable_variables, grads, strict=True):
        if id(variable) in generator_ids:
            assert grad is not None and np.abs(np.asarray(grad)).max() > 0, variable.path


@pytest.mark.parametrize("distance", ["squared_euclidean", "cosine"])
def test_no_hallucination_is_a_plain_prototypical_network(distance):
    episode = _episode(RNG)
    encoder = _linear(FEATURES)
    learner = HallucinatingProtoNet(encoder, num_ways=3, num_hallucinated=0, distance=distance)
    logits = np.asarray(learner(episode))
    assert learner.generator is None and len(learner.trainable_variables) == 2
    for b in range(2):
        features = _numpy_features(encoder, episode["support_x"][b])
        labels = episode["support_y"][b]
        prototypes = np.stack([features[labels == c].mean(0) for c in range(3)])
        query = _numpy_features(encoder, episode["query_x"][b])
        if distance == "cosine":
            unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
            expected = unit(query) @ unit(prototypes).T - 1.0
        else:
            expected = -((query[:, None] - prototypes[None]) ** 2).sum(-1)
        np.testing.assert_allclose(logits[b], expected, rtol=1e-4, atol=1e-4)


def test_few_shot_logits_serve_one_episode_of_any_size():
    learner = HallucinatingProtoNet(_linear(FEATURES), num_hallucinated=2, noise_dim=NOISE,
                                    deterministic_inference=True)
    episode = _episode(RNG, support_y=((3, 0, 1, 2, 3, 4, 0),), queries=3)
    served = learner.few_shot_logits(episode["support_x"][0], episode["support_y"][0],
                                     episode["query_x"][0])
    assert served.shape == (3, 5)
    # num_ways=None: the batched call infers N = 5 from the labels too.
    np.testing.assert_allclose(np.asarray(served), np.asarray(learner(episode))[0], rtol=1e-6)


@pytest.mark.parametrize("custom_generator", [False, True])
def test_config_and_keras_file_round_trip(custom_generator, tmp_path):
    episode = _episode(RNG)
    generator = _copying_generator() if custom_generator else None
    learner = HallucinatingProtoNet(_linear(FEATURES), num_ways=3, num_hallucinated=3,
                                    generator=generator, noise_dim=NOISE, generator_units=6,
                                    deterministic_inference=True, seed=4)
    expected = np.asarray(learner(episode))
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(learner)))
    clone = keras.saving.deserialize_keras_object(serialized)
    assert type(clone) is HallucinatingProtoNet
    assert (clone.num_hallucinated, clone.noise_dim, clone.generator_units, clone.seed) == (
        3, NOISE, (6,), 4)
    # The default generator is rebuilt from `generator_units`, not serialized.
    assert (serialized["config"]["generator"] is None) is not custom_generator
    assert json.loads(json.dumps(clone.get_config())) == serialized["config"]
    assert keras.saving.get_registered_name(HallucinatingProtoNet) == (
        "tf_mtml>HallucinatingProtoNet")
    learner.save(tmp_path / "hallucination.keras")
    loaded = keras.models.load_model(tmp_path / "hallucination.keras")
    np.testing.assert_array_equal(np.asarray(loaded(episode)), expected)


def test_compiled_training_step_and_mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    learner = HallucinatingProtoNet(keras.Sequential([keras.layers.Dense(FEATURES)]),
                                    num_ways=3, num_hallucinated=2, noise_dim=NOISE, seed=0)
    step = tf.function(lambda episode: learner.train_gradients(episode, global_batch_size=2))
    loss, grads, logits = step(_episode(RNG))
    assert learner.generator.compute_dtype == "float16" and logits.dtype == "float32"
    assert np.isfinite(float(loss)) and all(np.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_hallucinated": -1}, "num_hallucinated=-1"),
    ({"num_hallucinated": 1.5}, "num_hallucinated=1.5"),
    ({"num_ways": 0}, "num_ways=0"),
    ({"noise_dim": 0}, "noise_dim=0"),
    ({"generator_units": (4, -2)}, r"generator_units=\(4, -2\)"),
    ({"distance": "l1"}, "distance='l1'"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        HallucinatingProtoNet(keras.Sequential([keras.layers.Dense(3)]),
                              **{"num_ways": 3, **kwargs})


def test_generator_with_wrong_output_width_raises():
    learner = HallucinatingProtoNet(_linear(FEATURES), num_ways=3, noise_dim=NOISE,
                                    generator=keras.Sequential([keras.layers.Dense(7)]))
    with pytest.raises(ValueError, match=r"returns \(None, 7\)"):
        learner(_episode(RNG))
