"""Tests of tf_mtml.meta.relation."""


import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.layers.helpers import assert_keras_file_round_trip
from tests.meta.test_prototypical import assert_config_round_trip, traced_output_shape
from tf_mtml.meta.backbones import conv4
from tf_mtml.meta.base import episode_scores
from tf_mtml.meta.relation import RelationNetwork

RNG = np.random.default_rng(2)
SIZE = 4


def _encoder(channels=3):
    """1x1 convolution: `(4, 4, 1)` images -> `(4, 4, channels)` feature maps."""
    return keras.Sequential([keras.Input((SIZE, SIZE, 1)), keras.layers.Conv2D(channels, 1)])


def _episode(batch=2, ways=3, shots=2, queries=2):
    support_y = np.stack([RNG.permutation(np.repeat(np.arange(ways), shots))
                          for _ in range(batch)])
    return {
        "support_x": RNG.normal(size=(batch, ways * shots, SIZE, SIZE, 1)).astype("float32"),
        "support_y": support_y.astype("int32"),
        "query_x": RNG.normal(size=(batch, ways * queries, SIZE, SIZE, 1)).astype("float32"),
        "query_y": np.tile(np.repeat(np.arange(ways), queries), (batch, 1)).astype("int32"),
    }


def _randomized(model, episode):
    model(episode)
    for weight in model.trainable_weights:
        weight.assign(RNG.normal(scale=0.5, size=weight.shape).astype("float32"))
    return model


def test_scores_have_episode_shape_and_lie_in_0_1():
    model = _randomized(RelationNetwork(_encoder(), relation_filters=4, relation_units=5),
                        _episode())
    scores = model(_episode(ways=4, shots=1, queries=3)).numpy()
    assert scores.dtype == np.float32 and scores.shape == (2, 12, 4)
    assert np.all((scores >= 0.0) & (scores <= 1.0))
    assert np.std(scores) > 1e-3  # not saturated


def test_num_ways_makes_the_class_dimension_static():
    model = RelationNetwork(_encoder(), relation_filters=4, num_ways=3)
    assert traced_output_shape(model, _episode()) == [2, 6, 3]


def test_k_shot_class_features_are_sums_fed_to_the_relation_module():
    episode = _episode(batch=2, ways=3, shots=3, queries=2)
    model = _randomized(RelationNetwork(_encoder(), relation_filters=4), episode)
    features = model.encoder(episode["support_x"].reshape(-1, SIZE, SIZE, 1)).numpy()
    features = features.reshape(2, 9, SIZE, SIZE, 3)
    queries = model.encoder(episode["query_x"].reshape(-1, SIZE, SIZE, 1)).numpy()
    queries = queries.reshape(2, 6, SIZE, SIZE, 3)
    expected = np.zeros((2, 6, 3))
    for b in range(2):
        for n in range(3):
            class_sum = features[b][episode["support_y"][b] == n].sum(axis=0)
            pairs = np.concatenate([np.broadcast_to(class_sum, queries[b].shape), queries[b]],
                                   axis=-1)
            expected[b, :, n] = model.relation_module(pairs, training=False).numpy()[:, 0]
    np.testing.assert_allclose(model(episode).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_loss_is_squared_error_against_one_hot():
    episode = _episode()
    model = RelationNetwork(_encoder(), relation_filters=4)
    scores = model(episode).numpy()
    expected = ((scores - np.eye(3)[episode["query_y"]]) ** 2).mean(axis=(1, 2))
    np.testing.assert_allclose(model.episode_losses(episode, scores).numpy(), expected,
                               rtol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="query_y"):
        model.episode_losses({**episode, "query_y": episode["query_y"] + 1}, scores)


def _pattern_episodes(rng, batch, ways=3, shots=2, queries=3):
    """Each class is a random 4x4 pattern; examples add noise of std 0.3."""
    patterns = rng.normal(size=(batch, ways, SIZE, SIZE, 1))

    def draw(count):
        x = np.repeat(patterns, count, axis=1)
        labels = np.tile(np.repeat(np.arange(ways), count), (batch, 1))
        return (x + rng.normal(scale=0.3, size=x.shape)).astype("float32"), labels.astype("int32")

    (support_x, support_y), (query_x, query_y) = draw(shots), draw(queries)
    return {"support_x": support_x, "support_y": support_y, "query_x": query_x,
            "query_y": query_y}


def test_training_on_random_patterns_beats_chance():
    keras.utils.set_random_seed(0)
    model = RelationNetwork(_encoder(8), relation_filters=16, relation_units=8, num_ways=3)
    rng = np.random.default_rng(0)
    held_out = _pattern_episodes(np.random.default_rng(1), batch=32)

    def accuracy():
        return float(np.mean(episode_scores("classification", held_out["query_y"],
                                            model(held_out))))

    before = accuracy()
    optimizer = keras.optimizers.Adam(3e-3)

    @tf.function
    def step(episode):
        loss, gradients, _ = model.train_gradients(episode, global_batch_size=8)
        optimizer.apply(gradients, model.trainable_variables)
        return loss

    for _ in range(30):
        step(_pattern_episodes(rng, batch=8))
    after = accuracy()
    assert after > 0.8 and after - before > 0.3, (before, after)  # chance is 1/3


def test_few_shot_logits_traces_once_for_any_ways_and_shots():
    model = RelationNetwork(_encoder(), relation_filters=4)
    model(_episode())
    traces = []
    image = tf.TensorSpec((None, SIZE, SIZE, 1), tf.float32)

    @tf.function(input_signature=[image, tf.TensorSpec((None,), tf.int32), image])
    def few_shot(support_x, support_y, query_x):
        traces.append(1)
        return model.few_shot_logits(support_x, support_y, query_x)

    for ways, shots in [(3, 2), (5, 1)]:
        episode = _episode(batch=1, ways=ways, shots=shots, queries=2)
        scores = few_shot(episode["support_x"][0], episode["support_y"][0],
                          episode["query_x"][0])
        np.testing.assert_allclose(scores.numpy(), model(episode).numpy()[0], rtol=1e-5,
                                   atol=1e-6)
    assert len(traces) == 1


def test_config_and_keras_file_round_trips(tmp_path):
    model = RelationNetwork(_encoder(), relation_filters=4, relation_units=6, synchronized=True,
                            num_ways=3)
    episode = _episode()
    model(episode)
    assert keras.saving.get_registered_name(type(model)) == "tf_mtml>RelationNetwork"
    clone = assert_config_round_trip(model)
    assert (clone.relation_filters, clone.relation_units, clone.synchronized) == (4, 6, True)
    assert_keras_file_round_trip(model, episode, tmp_path)


def test_conv4_embedding_under_mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = RelationNetwork(conv4(filters=8, pool_blocks=2, flatten=False), relation_filters=8)
    episode = {"support_x": RNG.normal(size=(1, 2, 28, 28, 1)).astype("float32"),
               "support_y": np.array([[1, 0]], "int32"),
               "query_x": RNG.normal(size=(1, 3, 28, 28, 1)).astype("float32"),
               "query_y": np.array([[0, 1, 1]], "int32")}
    loss, gradients, scores = model.train_gradients(episode, global_batch_size=1)
    assert scores.dtype == tf.float32 and tuple(scores.shape) == (1, 3, 2)
    assert model.relation_module.compute_dtype == "float16"
    assert np.isfinite(loss.numpy()) and all(g is not None for g in gradients)


@pytest.mark.parametrize("encoder,match", [
    (keras.Sequential([keras.Input((SIZE, SIZE, 1)), keras.layers.Flatten()]), "feature maps"),
    (keras.Sequential([keras.Input((SIZE, SIZE, 1)), keras.layers.MaxPooling2D(2)]),
     "at least 4x4"),
])
def test_unsuitable_encoder_raises(encoder, match):
    with pytest.raises(ValueError, match=match):
        RelationNetwork(encoder)(_episode())


def test_bad_inputs_raise():
    model = RelationNetwork(_encoder(), relation_filters=4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="negative label"):
        model({**_episode(), "support_y": -_episode()["support_y"]})
    with pytest.raises(ValueError, match="support_y"):
        model({**_episode(), "support_y": np.zeros((2, 6, 1), "int32")})
    for kwargs in ({"relation_filters": 0}, {"relation_units": 2.5}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            RelationNetwork(_encoder(), **kwargs)
