"""Downstream evaluation of a contrastive encoder: embeddings, a linear probe, a fine-tune.

The two standard read-outs of self-supervised representations (SimCLR, sec. 4 and 6):

- linear probe: a multinomial logistic regression (scikit-learn, L-BFGS, deterministic)
  on frozen, L2-normalised embeddings; it measures what the representation already
  separates linearly;
- fine-tune: a copy of the encoder with a new softmax head trained end to end on the few
  labelled images (`EmbeddingModel.classifier`); with `pretrained=False` the same recipe
  trains the architecture from scratch, the baseline that pretraining must beat.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from tf_mtml.data._common import check_positive_int, shuffled_epochs

_EMBED_BATCH = 512


def embed_images(model, images: np.ndarray, batch_size: int = _EMBED_BATCH) -> np.ndarray:
    """`model.embed` of `images` in batches: float32 `(n, d)` unit rows.

    Args:
        model: An `EmbeddingModel` (anything with `embed(images, training=False)`).
        images: `(n, *image_shape)` float32.
        batch_size: Images per call.

    Returns:
        The embeddings as a numpy array.
    """
    check_positive_int("batch_size", batch_size)
    chunks = [keras.ops.convert_to_numpy(model.embed(images[i:i + batch_size], training=False))
              for i in range(0, len(images), batch_size)]
    return np.concatenate(chunks).astype(np.float32)


def probe_accuracy(train_embeddings: np.ndarray, train_labels: np.ndarray,
                   test_embeddings: np.ndarray, test_labels: np.ndarray,
                   c: float = 1.0) -> float:
    """Test accuracy of a logistic regression fitted on frozen embeddings.

    Args:
        train_embeddings: `(n, d)` embeddings of the labelled examples.
        train_labels: `(n,)` their integer labels (at least two classes).
        test_embeddings: `(m, d)`.
        test_labels: `(m,)`.
        c: Inverse L2 regularisation strength of `sklearn.linear_model.LogisticRegression`.

    Returns:
        The accuracy in `[0, 1]`.
    """
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(train_labels)) < 2:
        raise ValueError(
            "A linear probe needs labelled examples of at least 2 classes. Received labels: "
            f"{np.unique(train_labels).tolist()}")
    probe = LogisticRegression(C=c, max_iter=2000)
    probe.fit(np.asarray(train_embeddings, np.float64), train_labels)
    return float(np.mean(probe.predict(np.asarray(test_embeddings, np.float64)) == test_labels))


def fine_tune_accuracy(
    classifier: keras.Model,
    images: np.ndarray,
    labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    steps: int,
    learning_rate: float = 1e-3,
    batch_size: int = 32,
    augment_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None = None,
    seed: int = 0,
) -> float:
    """Trains `classifier` end to end on the labelled images; returns its test accuracy.

    Batches of `min(batch_size, n)` images are drawn from seeded reshuffled epochs; with
    `augment_fn` every drawn image is a new random view (`augment_fn(image, seed)`).

    Args:
        classifier: Images -> logits, e.g. `EmbeddingModel.classifier(num_classes)`.
        images: `(n, *image_shape)` labelled training images.
        labels: `(n,)` integer labels.
        test_images: `(m, *image_shape)`.
        test_labels: `(m,)`.
        steps: Adam steps.
        learning_rate: Adam learning rate.
        batch_size: Largest batch.
        augment_fn: Optional `(image, seed (2,)) -> image` applied to every training image.
        seed: Non-negative seed of the batch order and augmentations.

    Returns:
        The test accuracy in `[0, 1]`.
    """
    check_positive_int("steps", steps)
    check_positive_int("batch_size", batch_size)
    dataset = shuffled_epochs(tf.data.Dataset.from_tensor_slices((images, labels)),
                              len(images), seed)
    if augment_fn is not None:
        def view(index, example):
            key = tf.stack([tf.constant(seed, tf.int64), index])
            return augment_fn(example[0], key), example[1]

        dataset = dataset.enumerate().map(view, num_parallel_calls=tf.data.AUTOTUNE,
                                          deterministic=True)
    dataset = dataset.batch(min(batch_size, len(images)), drop_remainder=True)
    classifier.compile(optimizer=keras.optimizers.Adam(learning_rate),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       jit_compile=False)
    classifier.fit(dataset.prefetch(tf.data.AUTOTUNE), epochs=1, steps_per_epoch=steps,
                   shuffle=False, verbose=0)
    # Eager calls, not `predict`: a new classifier per budget would retrace `predict` each time.
    logits = np.concatenate([
        keras.ops.convert_to_numpy(classifier(test_images[i:i + _EMBED_BATCH], training=False))
        for i in range(0, len(test_images), _EMBED_BATCH)])
    return float(np.mean(np.argmax(logits, axis=-1) == test_labels))
