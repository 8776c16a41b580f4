"""Tests for tf_mtml.serving.warmup: TF Serving's warmup file, written, read and replayed."""

import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, prediction_log_pb2

from tests.serving.conftest import INPUT_SIGNATURE, build_functional_model
from tf_mtml.serving import export
from tf_mtml.serving.export import export_saved_model
from tf_mtml.serving.warmup import (
    MAX_WARMUP_RECORDS,
    check_warmup_examples,
    read_warmup_requests,
    replay_warmup,
    replay_warmup_in_fresh_process,
    warmup_path,
    warmup_records,
    write_warmup_requests,
)

SCALED = {"features": tf.TensorSpec((None, 4), tf.float32)}


def _examples(batch):
    return {"serving_default": batch, "scaled": {"features": batch["features"][:2]}}


def _export(model, base, batch, **kwargs):
    return export_saved_model(
        model, base, input_signature=INPUT_SIGNATURE,
        extra_endpoints={"scaled": (lambda d: {"doubled": d["features"] * 2.0}, SCALED)},
        warmup_examples=_examples(batch), model_name="ranker", **kwargs)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    rng = np.random.default_rng(0)
    batch = {"features": rng.normal(size=(5, 4)).astype(np.float32),
             "task_id": np.array([0, 2, 1, 1, 0], np.int32)}
    model = build_functional_model()
    return _export(model, str(tmp_path_factory.mktemp("ranker")), batch), model, batch


def test_warmup_file_has_one_predict_log_per_signature(exported):
    export_dir, _, batch = exported
    path = os.path.join(export_dir, "assets.extra", "tf_serving_warmup_requests")
    assert warmup_path(export_dir) == path and os.path.isfile(path)
    logs = [prediction_log_pb2.PredictionLog.FromString(raw)
            for raw in tf.data.TFRecordDataset(path).as_numpy_iterator()]
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log", "predict_log"]
    requests = [log.predict_log.request for log in logs]
    assert [r.model_spec.signature_name for r in requests] == ["scaled", "serving_default"]
    assert {r.model_spec.name for r in requests} == {"ranker"}
    assert [r.SerializeToString() for r in read_warmup_requests(export_dir)] == [
        r.SerializeToString() for r in requests]
    default = tf.make_ndarray(requests[1].inputs["task_id"])
    assert default.dtype == np.int32
    np.testing.assert_array_equal(default, batch["task_id"])
    np.testing.assert_array_equal(tf.make_ndarray(requests[0].inputs["features"]),
                                  batch["features"][:2])


def test_replay_runs_every_record_through_the_session_loader(exported):
    export_dir, model, batch = exported
    scaled, default = replay_warmup(export_dir)
    np.testing.assert_allclose(scaled["doubled"], 2.0 * batch["features"][:2], atol=1e-6)
    expected = model(batch, training=False)
    for name in ("score", "logits"):
        np.testing.assert_allclose(default[name], np.asarray(expected[name]), atol=1e-5)


def test_fresh_process_replay_reports_the_failing_version(exported, tmp_path):
    export_dir, model, batch = exported
    bad = export_saved_model(model, str(tmp_path), input_signature=INPUT_SIGNATURE)
    # Bypasses the export's checks: task id 5 is outside the model's 3-row embedding.
    write_warmup_requests(bad, {"serving_default": {**batch, "task_id": np.full(5, 5, np.int32)}},
                          "ranker")
    with pytest.raises(RuntimeError, match=rf"(?s)exit code 2.*warmup of '{bad}' failed: "
                                           r".*indices\[0\] = 5 is not in \[0, 3\)"):
        replay_warmup_in_fresh_process(iter([export_dir, bad]))


@pytest.mark.parametrize(("examples", "match"), [
    (lambda b: {"serving_default": b}, r"one request for each of \['scaled', 'serving_default'\]"),
    (lambda b: {**_examples(b), "extra": b}, r"Received: \['extra', 'scaled', 'serving_default'"),
    (lambda b: {**_examples(b), "scaled": {"feature": b["features"]}},
     r"signature 'scaled' that do not match its inputs \['features'\]. Received: \['feature'\]"),
    (lambda b: {**_examples(b), "scaled": {"features": b["features"].astype(np.float64)}},
     r"input 'features' of signature 'scaled' with dtype float64 and shape \(5, 4\), expected "
     r"dtype float32 and shape \(None, 4\)"),
    (lambda b: {**_examples(b), "scaled": {"features": b["features"][:, :3]}}, r"shape \(5, 3\)"),
    (lambda b: {**_examples(b), "scaled": {"features": b["features"][:0]}}, r"shape \(0, 4\)"),
    (lambda b: {**_examples(b), "scaled": {"features": np.float32(1.0)}}, r"shape \(\)"),
])
def test_examples_must_match_every_signature(exported, examples, match):
    _, _, batch = exported
    specs = {"serving_default": INPUT_SIGNATURE, "scaled": SCALED}
    with pytest.raises(ValueError, match=match):
        check_warmup_examples(examples(batch), specs)


def test_invalid_examples_fail_the_export_before_anything_is_written(exported, tmp_path):
    _, model, batch = exported
    with pytest.raises(ValueError, match="dtype float64"):
        _export(model, str(tmp_path), {**batch, "features": batch["features"].astype(np.float64)})
    assert os.listdir(tmp_path) == []


def test_warmup_is_written_before_the_rename_and_cleaned_up_on_failure(exported, tmp_path,
                                                                       monkeypatch):
    _, model, batch = exported
    seen = []
    rename = os.rename

    def spy(src, dst):
        seen.append(os.path.isfile(warmup_path(src)))
        rename(src, dst)

    monkeypatch.setattr(export.os, "rename", spy)
    _export(model, str(tmp_path / "ok"), batch)
    assert seen == [True]

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(export, "write_warmup_requests", fail)
    with pytest.raises(OSError, match="disk full"):
        _export(model, str(tmp_path / "full"), batch)
    assert os.listdir(tmp_path / "full") == []


def test_record_count_is_limited_for_tf_serving():
    one = {"x": np.zeros((1, 1), np.float32)}
    assert len(warmup_records({f"s{i}": one for i in range(MAX_WARMUP_RECORDS)}, "m")) == 1000
    with pytest.raises(ValueError, match="reads 1 to 1000 warmup records. Received: 1001"):
        warmup_records({f"s{i}": one for i in range(MAX_WARMUP_RECORDS + 1)}, "m")


def test_reading_a_missing_or_foreign_warmup_file_says_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no warmup file assets.extra/tf_serving_"):
        read_warmup_requests(str(tmp_path))
    os.makedirs(tmp_path / "assets.extra")
    request = classification_pb2.ClassificationRequest()
    log = prediction_log_pb2.PredictionLog(
        classify_log=prediction_log_pb2.ClassifyLog(request=request))
    with tf.io.TFRecordWriter(warmup_path(str(tmp_path))) as writer:
        writer.write(log.SerializeToString())
    with pytest.raises(ValueError, match="record 0 .* is a classify_log, expected a predict_log"):
        read_warmup_requests(str(tmp_path))
