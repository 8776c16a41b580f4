"""Tests of tf_mtml.meta.black_box."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.meta.black_box import BlackBoxLearner

RNG = np.random.default_rng(0)


def _episodes(rng, batch=2, ways=3, shots=2, queries=2, dim=4):
    support_y = np.tile(np.arange(ways), (batch, shots)).astype("int32")
    query_y = np.tile(np.arange(ways), (batch, queries)).astype("int32")
    return {"support_x": rng.normal(size=(batch, ways * shots, dim)).astype("float32"),
            "support_y": support_y,
            "query_x": rng.normal(size=(batch, ways * queries, dim)).astype("float32"),
            "query_y": query_y}


def _regression_episodes(rng, batch=2, shots=5, queries=4):
    """Lines `y = a * x` with a slope `a` per episode."""
    slope = rng.uniform(-2.0, 2.0, size=(batch, 1, 1))
    support_x = rng.uniform(-1.0, 1.0, size=(batch, shots, 1))
    query_x = rng.uniform(-1.0, 1.0, size=(batch, queries, 1))
    return {"support_x": support_x.astype("float32"),
            "support_y": (slope * support_x).astype("float32"),
            "query_x": query_x.astype("float32"), "query_y": (slope * query_x).astype("float32")}


def _learner(problem="classification", **kwargs):
    keras.utils.set_random_seed(1)
    encoder = keras.Sequential([keras.layers.Dense(8, "relu")])
    kwargs.setdefault("num_ways", 3 if problem == "classification" else None)
    return BlackBoxLearner(encoder, units=8, num_heads=2, problem=problem, **kwargs)


def _permuted_support(episode, rng):
    permuted = dict(episode)
    for b in range(episode["support_x"].shape[0]):
        order = rng.permutation(episode["support_x"].shape[1])
        for key in ("support_x", "support_y"):
            permuted[key] = permuted[key].copy()
            permuted[key][b] = episode[key][b][order]
    return permuted


@pytest.mark.parametrize("problem", ["classification", "regression"])
def test_permuting_the_support_set_leaves_predictions_unchanged(problem):
    episode = _episodes(RNG) if problem == "classification" else _regression_episodes(RNG)
    learner = _learner(problem)
    expected = np.asarray(learner(episode))
    permuted = _permuted_support(episode, np.random.default_rng(3))
    assert not np.array_equal(permuted["support_x"], episode["support_x"])
    np.testing.assert_allclose(np.asarray(learner(permuted)), expected, atol=1e-5)


@pytest.mark.parametrize("problem", ["classification", "regression"])
def test_queries_do_not_see_each_other(problem):
    episode = _episodes(RNG) if problem == "classification" else _regression_episodes(RNG)
    learner = _learner(problem)
    expected = np.asarray(learner(episode))
    changed = dict(episode, query_x=episode["query_x"].copy())
    changed["query_x"][:, 0] += 3.0
    actual = np.asarray(learner(changed))
    np.testing.assert_allclose(actual[:, 1:], expected[:, 1:], atol=1e-6)
    assert np.abs(actual[:, 0] - expected[:, 0]).max() > 1e-3


@pytest.mark.parametrize("problem", ["classification", "regression"])
def test_predictions_read_the_support_labels(problem):
    episode = _episodes(RNG) if problem == "classification" else _regression_episodes(RNG)
    learner = _learner(problem)
    expected = np.asarray(learner(episode))
    changed = dict(episode, support_y=episode["support_y"].copy())
    if problem == "classification":
        changed["support_y"][:, 0] = (changed["support_y"][:, 0] + 1) % 3
    else:
        changed["support_y"][:, 0] += 1.0
    assert np.abs(np.asarray(learner(changed)) - expected).max() > 1e-3


def _cluster_episodes(rng, batch, ways=2, shots=2, queries=2):
    """Each episode draws new 2-D class centres, so only the support set tells the classes."""
    centres = rng.normal(scale=2.0, size=(batch, ways, 2))

    def sample(labels):
        x = np.take_along_axis(centres, labels[..., None], axis=1)
        return (x + rng.normal(scale=0.3, size=x.shape)).astype("float32")

    support_y = np.tile(np.arange(ways), (batch, shots)).astype("int32")
    query_y = np.tile(np.arange(ways), (batch, queries)).astype("int32")
    return {"support_x": sample(support_y), "support_y": support_y,
            "query_x": sample(query_y), "query_y": query_y}


def test_learns_a_tiny_episode_family_above_chance():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    learner = BlackBoxLearner(keras.Sequential([keras.layers.Dense(16, "relu")]), num_ways=2,
                              units=16, num_blocks=1, num_heads=2)
    test_episode = _cluster_episodes(np.random.default_rng(2), batch=200)
    learner(test_episode)
    optimizer = keras.optimizers.Adam(0.01)
    optimizer.build(learner.trainable_variables)  # before tracing: one trace, not two

    @tf.function
    def step(episode):
        _, grads, _ = learner.train_gradients(episode, global_batch_size=32)
        optimizer.apply(grads, learner.trainable_variables)

    for _ in range(200):
        step(_cluster_episodes(rng, batch=32))
    predicted = np.argmax(np.asarray(learner(test_episode)), -1)
    accuracy = (predicted == test_episode["query_y"]).mean()
    assert accuracy > 0.8, accuracy


def test_output_shapes_and_gradients():
    learner = _learner()
    loss, grads, logits = learner.train_gradients(_episodes(RNG), global_batch_size=2)
    assert logits.shape == (2, 6, 3) and logits.dtype == "float32"
    assert len(grads) == len(learner.trainable_variables)
    assert all(g is not None and np.isfinite(g).all() for g in grads)
    regression = _learner("regression")
    assert regression(_regression_episodes(RNG)).shape == (2, 4, 1)


@pytest.mark.parametrize("problem", ["classification", "regression"])
def test_config_and_keras_file_round_trip(problem, tmp_path):
    episode = _episodes(RNG) if problem == "classification" else _regression_episodes(RNG)
    learner = _learner(problem, num_blocks=2, dropout=0.1)
    expected = np.asarray(learner(episode))
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(learner)))
    clone = keras.saving.deserialize_keras_object(serialized)
    assert type(clone) is BlackBoxLearner
    assert (clone.problem, clone.units, clone.num_blocks, clone.num_heads, clone.dropout) == (
        problem, 8, 2, 2, 0.1)
    assert keras.saving.get_registered_name(BlackBoxLearner) == "tf_mtml>BlackBoxLearner"
    learner.save(tmp_path / "black_box.keras")
    loaded = keras.models.load_model(tmp_path / "black_box.keras")
    np.testing.assert_array_equal(np.asarray(loaded(episode)), expected)


def test_mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    learner = _learner()
    loss, grads, logits = learner.train_gradients(_episodes(RNG), global_batch_size=2)
    assert logits.dtype == "float32" and np.isfinite(np.asarray(logits)).all()
    assert learner.support_blocks[0].attention.compute_dtype == "float16"
    assert np.isfinite(float(loss)) and all(np.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_ways": None}, "num_ways=None"),
    ({"num_ways": 3, "num_heads": 3}, "num_heads=3"),
    ({"num_ways": 3, "units": 0}, "units=0"),
    ({"num_ways": 3, "num_blocks": 0}, "num_blocks=0"),
    ({"num_ways": 3, "dropout": 1.0}, "dropout=1.0"),
    ({"num_ways": 3, "problem": "ranking"}, "problem='ranking'"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BlackBoxLearner(keras.Sequential([keras.layers.Dense(4)]), **{"units": 8, **kwargs})


def test_regression_with_unshaped_targets_raises():
    learner = _learner("regression")
    episode = _regression_episodes(RNG)
    episode["support_y"] = episode["support_y"][..., 0]
    with pytest.raises(ValueError, match=r"support_y` of shape `\(B, K, T\)"):
        learner(episode)


def test_episode_without_support_raises():
    with pytest.raises(ValueError, match=r"Missing: \['support_x', 'support_y'\]"):
        _learner()({"query_x": np.zeros((1, 3, 4), "float32")})


def test_out_of_range_support_label_raises():
    episode = _episodes(RNG)
    episode["support_y"][0, 0] = 3
    with pytest.raises(tf.errors.InvalidArgumentError, match="found a larger label"):
        _learner()(episode)
