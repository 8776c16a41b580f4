"""Tests for tf_mtml.models.embedding: projections, normalised embeddings, classifiers."""

import keras
import numpy as np
import pytest

from tf_mtml.meta.backbones import conv4
from tf_mtml.models.embedding import EmbeddingModel
from tf_mtml.models.ood import KNNOODScorer


def _encoder(filters=16):
    # Seeded, and wide enough that no image has an all-zero (dead ReLU) embedding.
    keras.utils.set_random_seed(0)
    return conv4((8, 8, 1), filters=filters, pool_blocks=3)


def _images(n=5, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, 8, 8, 1)).astype("float32")


def _features(model, x):
    return np.asarray(model.encoder(x, training=False), np.float64)


def test_call_is_the_mlp_head_on_the_encoder_output():
    keras.utils.set_random_seed(0)
    model = EmbeddingModel(_encoder(), projection_units=(6, 3))
    x = _images()
    h = _features(model, x)
    w1, b1 = (np.asarray(v, np.float64) for v in model.hidden.dense_layers[0].weights)
    w2, b2 = (np.asarray(v, np.float64) for v in model.projection.weights)
    expected = np.maximum(h @ w1 + b1, 0.0) @ w2 + b2
    z = model(x, training=False)
    assert z.shape == (5, 3) and z.dtype == "float32"
    np.testing.assert_allclose(np.asarray(z), expected, rtol=1e-5, atol=1e-6)
    assert model.compute_output_shape((None, 8, 8, 1)) == (None, 3)
    assert model.embedding_dim == 16


def test_embed_is_the_unit_encoder_output():
    model = EmbeddingModel(_encoder(), projection_units=(6, 3))
    x = _images()
    h = _features(model, x)
    embedded = np.asarray(model.embed(x))
    np.testing.assert_allclose(embedded, h / np.linalg.norm(h, axis=1, keepdims=True),
                               rtol=1e-5, atol=1e-6)


def test_empty_projection_trains_on_the_encoder_output():
    model = EmbeddingModel(_encoder(), projection_units=())
    x = _images()
    np.testing.assert_allclose(np.asarray(model(x)), _features(model, x), rtol=1e-6)
    assert model.compute_output_shape((2, 8, 8, 1)) == (2, 16)


def test_keras_file_round_trip(tmp_path):
    model = EmbeddingModel(_encoder(), projection_units=(6, 3), name="simclr")
    x = _images()
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, EmbeddingModel) and loaded.projection_units == (6, 3)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(loaded.embed(x)), np.asarray(model.embed(x)),
                               atol=1e-6)


def test_ood_scorer_scores_embeddings_and_round_trips(tmp_path):
    model = EmbeddingModel(_encoder(), projection_units=(3,),
                           ood_scorer=KNNOODScorer(num_references=6, num_neighbors=2))
    train, x = _images(6, seed=1), _images(4, seed=2)
    model.ood_scorer.adapt(model.embed(train))
    h, refs = _features(model, x), _features(model, train)
    h, refs = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in (h, refs))
    expected = np.sort(np.linalg.norm(h[:, None] - refs[None], axis=-1), axis=1)[:, 1]
    np.testing.assert_allclose(np.asarray(model.ood_score(x)), expected, atol=1e-5)

    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.ood_scorer, KNNOODScorer)
    np.testing.assert_allclose(np.asarray(loaded.ood_score(x)), expected, atol=1e-5)


def test_ood_score_without_a_scorer_says_how_to_add_one():
    with pytest.raises(ValueError, match=r"no OOD scorer; build it with `ood_scorer="):
        EmbeddingModel(_encoder(), projection_units=(3,)).ood_score(_images())


def test_mixed_precision_outputs_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = EmbeddingModel(_encoder(), projection_units=(6, 3))
    x = _images()
    assert model.encoder.layers[1].compute_dtype == "float16"
    assert model(x).dtype == "float32" and model.embed(x).dtype == "float32"
    np.testing.assert_allclose(np.linalg.norm(np.asarray(model.embed(x)), axis=1), 1.0,
                               atol=1e-3)


def test_classifier_copies_the_encoder_without_sharing_it():
    keras.utils.set_random_seed(1)
    model = EmbeddingModel(_encoder(), projection_units=(6, 3))
    x, y = _images(8), np.arange(8) % 3
    classifier = model.classifier(3)
    assert classifier(x).shape == (8, 3)
    features = keras.Model(classifier.input, classifier.get_layer("head_flatten").output)
    np.testing.assert_allclose(np.asarray(features(x)), _features(model, x), atol=1e-6)

    before = [np.array(w) for w in model.get_weights()]
    classifier.compile(optimizer=keras.optimizers.SGD(0.5),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    classifier.fit(x, y, epochs=2, verbose=0)
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    assert not np.allclose(np.asarray(features(x)), _features(model, x))


def test_classifier_from_scratch_has_fresh_weights():
    model = EmbeddingModel(_encoder(), projection_units=(6, 3))
    scratch = model.classifier(3, pretrained=False)
    kernel = scratch.get_layer("conv0").kernel
    assert kernel.shape == model.encoder.get_layer("conv0").kernel.shape
    assert not np.allclose(np.asarray(kernel), np.asarray(model.encoder.get_layer("conv0").kernel))


@pytest.mark.parametrize("kwargs, message", [
    ({"encoder": keras.layers.Dense(3)}, r"`encoder`, expected a built Keras model"),
    ({"projection_units": (4, 0)}, r"`projection_units`, expected a positive integer"),
    ({"projection_units": "64"}, r"`projection_units`"),
    ({"ood_scorer": "knn"}, r"`ood_scorer`, expected None or a KNNOODScorer"),
])
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EmbeddingModel(**{"encoder": _encoder(), **kwargs})


def test_bad_num_classes_is_rejected():
    model = EmbeddingModel(_encoder(), projection_units=(3,))
    with pytest.raises(ValueError, match=r"`num_classes`, expected a positive integer. "
                                         r"Received: num_classes=0"):
        model.classifier(0)
