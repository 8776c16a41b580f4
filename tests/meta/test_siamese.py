"""Tests of tf_mtml.meta.siamese."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.meta.siamese import SiameseNetwork

RNG = np.random.default_rng(0)


def _episodes(rng, batch=2, ways=3, shots=2, queries=2, dim=4):
    """Random features; labels `0..N-1` repeated, queries in a shuffled class order."""
    support_y = np.tile(np.arange(ways), (batch, shots)).astype("int32")
    query_y = np.stack([rng.permutation(np.repeat(np.arange(ways), queries))
                        for _ in range(batch)]).astype("int32")
    return {"support_x": rng.normal(size=(batch, ways * shots, dim)).astype("float32"),
            "support_y": support_y,
            "query_x": rng.normal(size=(batch, ways * queries, dim)).astype("float32"),
            "query_y": query_y}


def _linear_siamese(dim=4, out=3, **kwargs):
    encoder = keras.Sequential([keras.layers.Dense(out)])
    learner = SiameseNetwork(encoder, **kwargs)
    encoder.build((None, dim))
    for w in encoder.weights:
        w.assign(RNG.normal(size=w.shape).astype("float32"))
    kernel, bias = (np.asarray(w, "float64") for w in encoder.weights)
    return learner, lambda x: x.astype("float64") @ kernel + bias


def _numpy_pair_loss(q, s, query_y, support_y, margin, balanced):
    """Closed form of the margin loss over all (query, support) pairs, one episode."""
    d = np.sqrt(((q[:, None, :] - s[None, :, :]) ** 2).sum(-1))
    y = (query_y[:, None] == support_y[None, :]).astype("float64")
    j = y * d**2 + (1 - y) * np.maximum(0.0, margin - d) ** 2
    if not balanced:
        return y, j.mean()
    return y, 0.5 * j[y == 1].mean() + 0.5 * j[y == 0].mean()


@pytest.mark.parametrize("balanced", [True, False])
def test_pair_labels_and_loss_match_numpy(balanced):
    episode = _episodes(RNG)
    margin = 2.5  # Some negative pairs lie inside the margin, some beyond it.
    learner, embed = _linear_siamese(num_ways=3, margin=margin, balanced=balanced)
    labels = np.asarray(learner.pair_labels(episode["query_y"], episode["support_y"]))
    losses = np.asarray(learner.episode_losses(episode, learner(episode)))
    expected = []
    for b in range(2):
        y, loss = _numpy_pair_loss(embed(episode["query_x"][b]), embed(episode["support_x"][b]),
                                   episode["query_y"][b], episode["support_y"][b], margin,
                                   balanced)
        np.testing.assert_array_equal(labels[b], y)
        expected.append(loss)
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    loss, grads, logits = learner.train_gradients(episode, global_batch_size=4)
    np.testing.assert_allclose(float(loss), sum(expected) / 4, rtol=1e-5)
    assert logits.shape == (2, 6, 3) and all(np.isfinite(g).all() for g in grads)


def test_nearest_support_logits_match_numpy():
    episode = _episodes(RNG, ways=4, shots=3)
    learner, embed = _linear_siamese(num_ways=4)
    logits = np.asarray(learner(episode))
    assert logits.shape == (2, 8, 4) and logits.dtype == np.float32
    for b in range(2):
        q, s = embed(episode["query_x"][b]), embed(episode["support_x"][b])
        for i in range(8):
            for c in range(4):
                nearest = min(np.linalg.norm(q[i] - s[j]) for j in range(12)
                              if episode["support_y"][b, j] == c)
                np.testing.assert_allclose(logits[b, i, c], -nearest, rtol=1e-5, atol=1e-5)


def test_gradients_finite_when_query_equals_a_support_example():
    episode = _episodes(RNG)
    episode["query_x"][:, 0] = episode["support_x"][:, 0]
    learner, _ = _linear_siamese(num_ways=3)
    _, grads, _ = learner.train_gradients(episode, global_batch_size=2)
    assert all(np.isfinite(g).all() for g in grads)


def _cluster_episodes(rng, batch, ways=3, queries=2, informative=2, nuisance=8):
    """One-shot episodes: class centres differ per episode in 2 dims; 8 dims are pure noise."""
    centres = rng.normal(scale=2.0, size=(batch, ways, informative))

    def sample(labels):
        signal = np.take_along_axis(centres, labels[..., None], axis=1)
        signal = signal + rng.normal(scale=0.3, size=signal.shape)
        noise = rng.normal(scale=2.0, size=(*labels.shape, nuisance))
        return np.concatenate([signal, noise], -1).astype("float32")

    support_y = np.tile(np.arange(ways), (batch, 1)).astype("int32")
    query_y = np.tile(np.repeat(np.arange(ways), queries), (batch, 1)).astype("int32")
    return {"support_x": sample(support_y), "support_y": support_y,
            "query_x": sample(query_y), "query_y": query_y}


def _accuracy(learner, episode):
    predicted = np.argmax(np.asarray(learner(episode)), -1)
    return (predicted == episode["query_y"]).mean()


def test_one_shot_accuracy_well_above_chance_after_training():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    learner = SiameseNetwork(keras.Sequential([keras.layers.Dense(8)]), num_ways=3, margin=2.0)
    test_episode = _cluster_episodes(np.random.default_rng(2), batch=200)
    before = _accuracy(learner, test_episode)
    optimizer = keras.optimizers.Adam(0.02)
    optimizer.build(learner.trainable_variables)  # before tracing: one trace, not two

    @tf.function
    def step(episode):
        _, grads, _ = learner.train_gradients(episode, global_batch_size=16)
        optimizer.apply(grads, learner.trainable_variables)

    for _ in range(150):
        step(_cluster_episodes(rng, batch=16))
    after = _accuracy(learner, test_episode)
    # Raw nearest neighbour is swamped by the noise dimensions; the trained encoder drops them.
    assert after > 0.85 and after > before + 0.25, (before, after)


def test_few_shot_logits_serve_one_episode_of_any_size():
    learner, _ = _linear_siamese(num_ways=3)
    episode = _episodes(RNG, batch=1, ways=5, shots=2)
    served = learner.few_shot_logits(episode["support_x"][0], episode["support_y"][0],
                                     episode["query_x"][0])
    inferred_ways = SiameseNetwork(learner.encoder)(episode)
    assert served.shape == (10, 5)
    np.testing.assert_allclose(np.asarray(served), np.asarray(inferred_ways)[0], rtol=1e-6)


def test_config_and_keras_file_round_trip(tmp_path):
    episode = _episodes(RNG)
    learner, _ = _linear_siamese(num_ways=3, margin=0.5, balanced=False)
    expected = np.asarray(learner(episode))
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(learner)))
    clone = keras.saving.deserialize_keras_object(serialized)
    assert type(clone) is SiameseNetwork
    assert (clone.num_ways, clone.margin, clone.balanced) == (3, 0.5, False)
    assert keras.saving.get_registered_name(SiameseNetwork) == "tf_mtml>SiameseNetwork"
    learner.save(tmp_path / "siamese.keras")
    loaded = keras.models.load_model(tmp_path / "siamese.keras")
    np.testing.assert_array_equal(np.asarray(loaded(episode)), expected)


def test_mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    episode = _episodes(RNG)
    learner = SiameseNetwork(keras.Sequential([keras.layers.Dense(3)]), num_ways=3)
    logits = learner(episode)
    loss, grads, _ = learner.train_gradients(episode, global_batch_size=2)
    assert logits.dtype == "float32" and np.isfinite(np.asarray(logits)).all()
    assert np.isfinite(float(loss)) and all(np.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_ways": 3, "margin": -1.0}, "margin=-1.0"),
    ({"num_ways": 0}, "num_ways=0"),
    ({"num_ways": 3, "margin": float("nan")}, "margin=nan"),
    ({"num_ways": 3, "margin": "1"}, "margin='1'"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SiameseNetwork(keras.Sequential([keras.layers.Dense(3)]), **kwargs)

