"""Round-trip and training checks shared by the layer tests."""

import json

import keras
import numpy as np


def assert_config_round_trip(layer: keras.layers.Layer) -> keras.layers.Layer:
    """Serializes `layer` through JSON, rebuilds it and compares the configs."""
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    clone = keras.saving.deserialize_keras_object(serialized)
    assert type(clone) is type(layer)
    assert clone.get_config() == layer.get_config()
    return clone


def assert_keras_file_round_trip(model: keras.Model, inputs, tmp_path) -> keras.Model:
    """Saves `model` as `.keras`, loads it and checks the outputs are identical."""
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    expected = keras.tree.flatten(model(inputs, training=False))
    actual = keras.tree.flatten(loaded(inputs, training=False))
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(e))
    return loaded


def fit_briefly(model: keras.Model, inputs, targets, loss="mse") -> dict:
    """Trains `model` for two steps and checks that the weights moved; returns the history."""
    model(keras.tree.map_structure(lambda a: a[:2], inputs))  # builds a subclassed model
    before = [np.array(w.numpy()) for w in model.trainable_weights]
    optimizer = keras.optimizers.SGD(0.1)
    if keras.config.dtype_policy().name == "mixed_float16":
        # The default initial loss scale (2**15) can overflow and skip both steps.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=8.0)
    model.compile(optimizer=optimizer, loss=loss)
    history = model.fit(inputs, targets, batch_size=4, epochs=1, verbose=0, shuffle=False)
    assert all(np.isfinite(v).all() for v in history.history["loss"])
    after = [np.array(w.numpy()) for w in model.trainable_weights]
    assert any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))
    return history.history
