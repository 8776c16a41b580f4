"""Tiny models and inputs shared by the serving tests."""

import keras
import numpy as np
import pytest
import tensorflow as tf

INPUT_SIGNATURE = {
    "features": tf.TensorSpec((None, 4), tf.float32),
    "task_id": tf.TensorSpec((None,), tf.int32),
}


def build_functional_model() -> keras.Model:
    """Two named inputs (float features, int32 task id) and two named outputs."""
    keras.utils.set_random_seed(0)
    features = keras.Input((4,), name="features")
    task_id = keras.Input((), dtype="int32", name="task_id")
    hidden = keras.layers.Dense(8, activation="relu")(
        features + keras.layers.Embedding(3, 4)(task_id)
    )
    outputs = {"score": keras.layers.Dense(1)(hidden), "logits": keras.layers.Dense(3)(hidden)}
    return keras.Model({"features": features, "task_id": task_id}, outputs)


@pytest.fixture
def functional_model() -> keras.Model:
    return build_functional_model()


@pytest.fixture
def batch() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "features": rng.normal(size=(5, 4)).astype(np.float32),
        "task_id": np.array([0, 2, 1, 1, 0], np.int32),
    }
