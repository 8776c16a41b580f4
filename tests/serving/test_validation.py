"""Tests for tf_mtml.serving.validation: request checks inside a served graph (session loader)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.serving import validation
from tf_mtml.serving.export import export_saved_model
from tf_mtml.serving.session_loader import LoadedSavedModel

SHAPES = {"a": tf.TensorSpec((None, 2, None), tf.float32), "b": tf.TensorSpec((None,), tf.int32)}
ROWS = {"x": tf.TensorSpec((None, 2), tf.float32), "y": tf.TensorSpec((None,), tf.int32)}
IDS = {"ids": tf.TensorSpec((None,), tf.int32)}
IMAGES = {"images": tf.TensorSpec((None, 2, 2, 1), tf.float32)}


def _endpoints():
    def rows(inputs):
        return validation.gate(inputs, [validation.same_rows_check("rows", inputs, ["x", "y"])])

    def ids(inputs):
        return validation.gate(inputs, [validation.id_range_check(
            "ids", "ids", inputs["ids"], 3, "colour ids (0=red, 1=green, 2=blue)",
            "Send one of these ids.")])

    def labels(inputs):
        return validation.gate(inputs, [
            validation.contiguous_labels_check("labels", "ids", inputs["ids"])])

    def images(inputs):
        return validation.gate(inputs, [
            validation.unit_interval_check("images", "images", inputs["images"])])

    return {"rows": (rows, ROWS), "ids": (ids, IDS), "labels": (labels, IDS),
            "images": (images, IMAGES)}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Every check in one SavedModel, loaded once by the session loader."""
    x = keras.Input((1,), name="x")
    model = keras.Model({"x": x}, keras.layers.Dense(1)(x))
    path = export_saved_model(model, str(tmp_path_factory.mktemp("checks")),
                              input_signature=SHAPES, serve_fn=dict,
                              extra_endpoints=_endpoints())
    with LoadedSavedModel(path) as loaded:
        yield loaded


def _fails(served, inputs, signature, match):
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        served.run(inputs, signature)


def test_declared_inner_shape_passes_with_any_size_where_none(served):
    for width in (1, 5):
        a = np.ones((3, 2, width), np.float32)
        outputs = served.run({"a": a, "b": np.arange(3, dtype=np.int32)})
        np.testing.assert_array_equal(outputs["a"], a)


@pytest.mark.parametrize(("shape", "received"), [
    ((3, 3, 4), r"\[3 3 4\]"),   # Wrong known inner dimension.
    ((3, 2), r"\[3 2\]"),        # Rank too low.
    ((3, 2, 4, 1), r"\[3 2 4 1\]"),  # Rank too high, known dimensions right.
    ((), r"\[\]"),               # A scalar.
])
def test_wrong_rank_or_inner_shape_names_input_expectation_and_fix(served, shape, received):
    _fails(served, {"a": np.ones(shape, np.float32), "b": np.arange(3, dtype=np.int32)},
           "serving_default",
           r"Input `a` of signature `serving_default` must have shape \(n, 2, n\) \(n examples, "
           r"the batch first\) and dtype float32\. Fix the request to send one such row per "
           rf"example\. Received shape:\] {received}")


def test_rank_one_input_rejects_a_matrix(served):
    _fails(served, {"a": np.ones((3, 2, 1), np.float32), "b": np.zeros((3, 1), np.int32)},
           "serving_default", r"Input `b` .* must have shape \(n,\).*int32.*\[3 1\]")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_input_is_rejected_and_counted(served, bad):
    a = np.ones((3, 2, 2), np.float32)
    a[0, 1, 0] = a[2, 0, 1] = bad
    _fails(served, {"a": a, "b": np.arange(3, dtype=np.int32)}, "serving_default",
           r"Input `a` of signature `serving_default` must hold finite values; found NaN or Inf\. "
           r"Impute or drop missing values before sending\. Number of non-finite values:\] \[2\]")


def test_same_rows(served):
    x = np.ones((4, 2), np.float32)
    np.testing.assert_array_equal(served.run({"x": x, "y": np.arange(4, dtype=np.int32)},
                                             "rows")["y"], np.arange(4))
    _fails(served, {"x": x, "y": np.arange(3, dtype=np.int32)}, "rows",
           r"Inputs `x`, `y` of signature `rows` must have the same number of rows, one per "
           r"example\. Send the same examples in each\. Received row counts:\] \[4 3\]")


def test_id_range(served):
    ids = np.array([2, 0, 1, 1], np.int32)
    np.testing.assert_array_equal(served.run({"ids": ids}, "ids")["ids"], ids)
    for bad in ([0, 3, 1], [-1, 0]):
        printed = " ".join(str(i) for i in bad)
        _fails(served, {"ids": np.array(bad, np.int32)}, "ids",
               r"Input `ids` of signature `ids` must hold colour ids \(0=red, 1=green, 2=blue\) "
               rf"in \[0, 3\)\. Send one of these ids\. Received:\] \[{printed}\]")


def test_contiguous_labels(served):
    labels = np.array([1, 0, 2, 1], np.int32)
    np.testing.assert_array_equal(served.run({"ids": labels}, "labels")["ids"], labels)
    for bad in ([0, 2, 2], [-1, 0, 1], [1, 1], []):
        _fails(served, {"ids": np.array(bad, np.int32)}, "labels",
               r"Input `ids` of signature `labels` must hold class labels 0\.\.N-1 with every "
               r"class present .* Relabel the support classes 0\.\.N-1\. Received:")


def test_unit_interval(served):
    images = np.linspace(0, 1, 8, dtype=np.float32).reshape(2, 2, 2, 1)
    np.testing.assert_array_equal(served.run({"images": images}, "images")["images"], images)
    _fails(served, {"images": images * 255}, "images",
           r"Input `images` of signature `images` must hold intensities in \[0, 1\]; divide "
           r"8-bit pixels by 255\. Received min and max:\] \[0\] \[255\]")
    _fails(served, {"images": images - 0.5}, "images", r"min and max:\] \[-0\.5\] \[0\.5\]")


def test_checks_also_raise_eagerly():
    ids = tf.constant([0, 3])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"must hold ids in \[0, 2\)"):
        validation.gate({"ids": ids}, [validation.id_range_check("e", "ids", ids, 2, "ids", "")])
    checked = validation.checked_inputs("e", {"x": tf.ones((2, 3))},
                                        {"x": tf.TensorSpec((None, 3), tf.float32)})
    np.testing.assert_array_equal(checked["x"], np.ones((2, 3)))
