"""Tests for tf_mtml.serving.task_score: one task's prediction per row, under the session loader."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.models.task_spec import TaskSpec
from tf_mtml.serving.export import export_saved_model
from tf_mtml.serving.session_loader import LoadedSavedModel
from tf_mtml.serving.task_score import (
    TASK_ID,
    TASK_SCORE,
    supports_task_score,
    task_score_endpoint,
    task_score_examples,
)

SIGNATURE = {"x": tf.TensorSpec((None, 3), tf.float32)}
TASKS = (TaskSpec("click", "binary"), TaskSpec("watch", "regression"),
         TaskSpec("like", "binary"))


def _model() -> keras.Model:
    """Three heads of known weights: click (b, 1), watch (b,), like (b, 1)."""
    x = keras.Input((3,), name="x")
    heads = {name: keras.layers.Dense(1, name=name)(x) for name in ("click", "watch", "like")}
    model = keras.Model({"x": x}, heads)
    for i, name in enumerate(("click", "watch", "like")):
        model.get_layer(name).set_weights([np.full((3, 1), i + 1.0, np.float32),
                                           np.array([0.5 * i], np.float32)])
    return model


def _predict(model):
    def predict(inputs):
        outputs = model(inputs, training=False)
        return {**outputs, "watch": keras.ops.squeeze(outputs["watch"], -1)}

    return predict


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    model = _model()
    extra = task_score_endpoint(_predict(model), SIGNATURE, TASKS)
    path = export_saved_model(model, str(tmp_path_factory.mktemp("scores")),
                              input_signature=SIGNATURE, serve_fn=_predict(model),
                              extra_endpoints=extra)
    with LoadedSavedModel(path) as loaded:
        yield loaded


def test_each_row_gets_the_prediction_of_its_task(served):
    x = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    ids = np.array([2, 0, 1, 2], np.int32)
    outputs = served.run({"x": x, TASK_ID: ids}, TASK_SCORE)
    # Head i computes (i + 1) * sum(x) + 0.5 * i.
    expected = (ids + 1) * x.astype(np.float64).sum(axis=1) + 0.5 * ids
    np.testing.assert_allclose(outputs["score"], expected, rtol=1e-6)
    assert outputs["task_name"].tolist() == [b"like", b"click", b"watch", b"like"]


def test_ids_outside_the_tasks_are_rejected_with_the_id_table(served):
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"`task_id` of signature `task_score` must hold task ids "
                             r"\(0=click, 1=watch, 2=like\) in \[0, 3\)\. Map task names to ids "
                             r"in this order\. Received:\] \[1 3\]"):
        served.run({"x": x, TASK_ID: np.array([1, 3], np.int32)}, TASK_SCORE)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"same number of rows.*\[2 1\]"):
        served.run({"x": x, TASK_ID: np.array([1], np.int32)}, TASK_SCORE)


def test_multiclass_models_export_no_task_score():
    tasks = (TaskSpec("click", "binary"), TaskSpec("genre", "multiclass", num_classes=4))
    assert supports_task_score(TASKS) and not supports_task_score(tasks)
    assert task_score_endpoint(lambda d: d, SIGNATURE, tasks) == {}
    assert task_score_examples({"x": np.zeros((2, 3), np.float32)}, tasks) == {}


def test_examples_cycle_the_task_ids_over_the_rows():
    x = np.zeros((5, 3), np.float32)
    examples = task_score_examples({"x": x}, TASKS)[TASK_SCORE]
    assert examples["x"] is x
    assert examples[TASK_ID].dtype == np.int32
    np.testing.assert_array_equal(examples[TASK_ID], [0, 1, 2, 0, 1])


def test_a_model_input_named_task_id_is_refused():
    with pytest.raises(ValueError, match=r"input named 'task_id'.*\['task_id', 'x'\]"):
        task_score_endpoint(lambda d: d, {**SIGNATURE, TASK_ID: SIGNATURE["x"]}, TASKS)
