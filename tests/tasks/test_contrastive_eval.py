"""Tests for tf_mtml.tasks.contrastive_eval: batched embeddings, linear probe, fine-tune."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.meta.backbones import conv4
from tf_mtml.models.embedding import EmbeddingModel
from tf_mtml.tasks.contrastive_eval import embed_images, fine_tune_accuracy, probe_accuracy


def _clusters(n_per_class, seed, dim=6):
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:3] * 5.0
    labels = np.repeat(np.arange(3), n_per_class)
    return centres[labels] + rng.normal(scale=0.3, size=(len(labels), dim)), labels


def test_embed_images_batches_model_embed():
    keras.utils.set_random_seed(0)
    model = EmbeddingModel(conv4((8, 8, 1), filters=8, pool_blocks=3), (4,))
    images = np.random.default_rng(0).uniform(size=(7, 8, 8, 1)).astype("float32")
    embedded = embed_images(model, images, batch_size=3)
    assert embedded.shape == (7, 8) and embedded.dtype == np.float32
    np.testing.assert_allclose(embedded, np.asarray(model.embed(images)), atol=1e-6)


def test_probe_separates_separable_clusters():
    train_x, train_y = _clusters(2, seed=0)
    test_x, test_y = _clusters(20, seed=1)
    assert probe_accuracy(train_x, train_y, test_x, test_y) == 1.0
    # Every test label moved to another class: every prediction is then wrong.
    assert probe_accuracy(train_x, train_y, test_x, (test_y + 1) % 3) == 0.0


def test_probe_needs_two_classes():
    with pytest.raises(ValueError, match=r"at least 2 classes. Received labels: \[1\]"):
        probe_accuracy(np.ones((3, 2)), np.ones(3, int), np.ones((1, 2)), np.ones(1, int))


def _mlp_classifier(dim=6):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((dim,))
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(16, "relu")(inputs)))


def test_fine_tune_learns_a_separable_problem():
    train_x, train_y = _clusters(4, seed=0)
    test_x, test_y = _clusters(10, seed=1)
    accuracy = fine_tune_accuracy(_mlp_classifier(), train_x.astype("float32"), train_y,
                                  test_x.astype("float32"), test_y, steps=60,
                                  learning_rate=0.05, batch_size=8)
    assert accuracy == 1.0


def test_fine_tune_trains_on_augmented_views():
    # The augmentation rotates the coordinates, moving each class to the next class's
    # centre: the classifier learns the rotated problem, so raw test points are all
    # misclassified and rotated ones all right.
    train_x, train_y = _clusters(4, seed=0, dim=3)
    test_x, test_y = _clusters(10, seed=1, dim=3)
    train_x, test_x = train_x.astype("float32"), test_x.astype("float32")

    def rotate(x, seed):
        del seed
        return tf.roll(x, 1, axis=0)

    kwargs = {"steps": 80, "learning_rate": 0.05, "batch_size": 8, "augment_fn": rotate}
    assert fine_tune_accuracy(_mlp_classifier(3), train_x, train_y, test_x, test_y,
                              **kwargs) == 0.0
    rolled = np.roll(test_x, 1, axis=1)
    assert fine_tune_accuracy(_mlp_classifier(3), train_x, train_y, rolled, test_y,
                              **kwargs) == 1.0


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, r"`steps`, expected a positive integer"),
    ({"steps": 1, "batch_size": 0}, r"`batch_size`, expected a positive integer"),
])
def test_fine_tune_rejects_bad_schedules(kwargs, message):
    x, y = _clusters(1, seed=0)
    with pytest.raises(ValueError, match=message):
        fine_tune_accuracy(_mlp_classifier(), x, y, x, y, **kwargs)
