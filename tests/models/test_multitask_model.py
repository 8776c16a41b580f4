import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.models.multitask_model import MultiTaskModel
from tf_mtml.models.task_spec import TaskSpec

TASKS = [TaskSpec("b", "binary", weight=2.0), TaskSpec("m", "multiclass", num_classes=3),
         TaskSpec("r", "regression", weight=0.5, standardize=True)]


def _network(dim=4):
    inputs = keras.Input((dim,), name="features")
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    outputs = {"b": keras.layers.Dense(1)(hidden), "m": keras.layers.Dense(3)(hidden),
               "r": keras.layers.Dense(1)(hidden)}
    return keras.Model({"features": inputs}, outputs)


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = {"b": (x[:, 0] > 0).astype("float32"), "m": (np.abs(x[:, 1]) * 2).astype("int32") % 3,
         "r": (10 + 5 * x[:, 2]).astype("float32")}
    y["b"][::4] = np.nan
    y["m"][::5] = -1
    y["r"][1::3] = np.nan
    return {"features": x}, y


def _reference_loss(raw, y, mean, std):
    """Numpy: sum_k w_k * mean over labelled examples of the per-example loss."""
    b, m, r = (np.asarray(raw[k], "float64") for k in "bmr")
    keep = ~np.isnan(y["b"])
    p = 1 / (1 + np.exp(-b[keep, 0]))
    bce = -(y["b"][keep] * np.log(p) + (1 - y["b"][keep]) * np.log(1 - p)).mean()
    keep = y["m"] >= 0
    log_softmax = m - np.log(np.exp(m).sum(-1, keepdims=True))
    ce = -log_softmax[keep, y["m"][keep]].mean()
    keep = ~np.isnan(y["r"])
    mse = ((r[keep, 0] - (y["r"][keep] - mean) / std) ** 2).mean()
    return 2.0 * bce + ce + 0.5 * mse


def test_compute_loss_is_the_weighted_masked_mean():
    model = MultiTaskModel(_network(), TASKS)
    x, y = _data()
    stats = model.adapt_label_statistics(y)
    raw = model(x)
    loss = model.compute_loss(x, y, raw)
    expected = _reference_loss({k: v.numpy() for k, v in raw.items()}, y, *stats["r"])
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    r = y["r"][~np.isnan(y["r"])]
    assert stats["r"] == pytest.approx((r.mean(), r.std()))


def test_missing_label_contributes_nothing():
    model = MultiTaskModel(_network(), TASKS)
    x, y = _data()
    y_other = {k: v.copy() for k, v in y.items()}
    # Only missing entries differ: any value behind a missing marker is ignored.
    y_other["m"][::5] = -7
    with tf.GradientTape(persistent=True) as tape:
        raw = model(x)
        a = model.compute_loss(x, y, raw)
        b = model.compute_loss(x, y_other, raw)
    assert float(a) == float(b)
    grad = tape.gradient(a, raw["b"]).numpy()
    assert np.all(grad[::4] == 0) and np.all(grad[1::4] != 0)


def test_postprocess_serves_label_space_predictions():
    model = MultiTaskModel(_network(), TASKS)
    model.set_label_statistics({"r": (10.0, 5.0)})
    x, _ = _data(8)
    raw = {k: v.numpy() for k, v in model(x).items()}
    served = {k: v.numpy() for k, v in model.serve(x).items()}
    np.testing.assert_allclose(served["b"], 1 / (1 + np.exp(-raw["b"][:, 0])), rtol=1e-5)
    np.testing.assert_allclose(served["m"].sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(served["r"], raw["r"][:, 0] * 5.0 + 10.0, rtol=1e-5)
    predicted = model.predict(x, verbose=0)
    np.testing.assert_allclose(predicted["r"], served["r"], rtol=1e-5)


def test_fit_reduces_loss_and_logs_per_task_metrics():
    keras.utils.set_random_seed(1)
    model = MultiTaskModel(_network(), TASKS, weighting="uncertainty")
    x, y = _data(256)
    model.adapt_label_statistics(y)
    model.compile(optimizer=keras.optimizers.Adam(0.02))
    history = model.fit(x, y, epochs=15, batch_size=64, verbose=0).history
    assert history["loss"][-1] < 0.6 * history["loss"][0]
    assert {"b/auc", "b/loss", "m/accuracy", "r/mse", "r/loss"} <= set(history)
    assert history["b/auc"][-1] > 0.9


def test_keras_file_round_trip_keeps_outputs_and_statistics(tmp_path):
    model = MultiTaskModel(_network(), TASKS, weighting="uncertainty")
    model.set_label_statistics({"r": (3.0, 2.0)})
    x, _ = _data(8)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, MultiTaskModel) and [t.name for t in loaded.tasks] == list("bmr")
    for key, value in model.serve(x).items():
        np.testing.assert_allclose(loaded.serve(x)[key], value, atol=1e-6)
    assert type(loaded.weighting).__name__ == "UncertaintyWeighting"


def test_mixed_float16_trains_with_float32_outputs():
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = MultiTaskModel(_network(), TASKS)
    x, y = _data(64)
    model.compile(optimizer="adam")
    history = model.fit(x, y, epochs=2, batch_size=32, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    assert all(v.dtype == "float32" for v in model.serve(x).values())


@pytest.mark.parametrize("labels, match", [
    ({"b": [1.0], "m": [1], "r": [1.0], "clicks": [1.0]}, r"unknown task\(s\) \['clicks'\]"),
    ({"b": [1.0], "m": [1]}, r"No labels for task\(s\) \['r'\].*NaN"),
    ({"b": [[1.0, 0.0]], "m": [1], "r": [1.0]}, r"'b'.*shape \(batch,\).*\(1, 2\)"),
    ({"b": [1.0], "m": [1.0], "r": [1.0]}, r"multiclass task 'm'.*integer.*float32"),
    ([1.0, 2.0], r"dict \{task_name: labels\}"),
])
def test_bad_labels_raise_clear_errors(labels, match):
    model = MultiTaskModel(_network(), TASKS)
    if isinstance(labels, dict):
        labels = {k: np.asarray(v, "int32" if isinstance(v[0], int) else "float32")
                  for k, v in labels.items()}
    with pytest.raises(ValueError, match=match):
        model.check_labels(labels)


def test_network_must_match_the_tasks():
    with pytest.raises(ValueError, match=r"one raw output per task \['b', 'm', 'r', 'extra'\]"):
        MultiTaskModel(_network(), TASKS + [TaskSpec("extra", "binary")])
    with pytest.raises(ValueError, match=r"multiclass task 'm' has 3 units; expected 5"):
        MultiTaskModel(_network(), [TASKS[0], TaskSpec("m", "multiclass", num_classes=5),
                                    TASKS[2]])


def test_statistics_for_a_task_that_does_not_standardise():
    model = MultiTaskModel(_network(), TASKS)
    with pytest.raises(ValueError, match=r"Task 'b' does not standardise"):
        model.set_label_statistics({"b": (0.0, 1.0)})
    with pytest.raises(ValueError, match=r"std > 0.*std=0.0"):
        model.set_label_statistics({"r": (0.0, 0.0)})
