"""Tests for tf_mtml.serving.session_loader: the loader TF Serving uses, requests, the CLI."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2

from tests.serving.conftest import INPUT_SIGNATURE, build_functional_model
from tf_mtml.serving import session_loader
from tf_mtml.serving.export import export_saved_model
from tf_mtml.serving.session_loader import (
    LoadedSavedModel,
    inputs_from_predict_request,
    main,
    predict_request,
    run_signature_with_session_loader,
    serve_in_fresh_process,
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(export_dir, model) for the functional model, exported once for the module."""
    model = build_functional_model()
    base = str(tmp_path_factory.mktemp("ranker"))
    return export_saved_model(model, base, input_signature=INPUT_SIGNATURE), model


def test_predict_request_round_trip_replays_through_loader(exported, batch):
    export_dir, model = exported
    request = predict_request(batch, "ranker")
    wire = predict_pb2.PredictRequest.FromString(request.SerializeToString())

    assert wire.model_spec.name == "ranker"
    assert wire.model_spec.signature_name == "serving_default"
    assert wire.inputs["features"].dtype == types_pb2.DT_FLOAT
    assert wire.inputs["task_id"].dtype == types_pb2.DT_INT32
    assert [d.size for d in wire.inputs["features"].tensor_shape.dim] == [5, 4]
    decoded = inputs_from_predict_request(wire)
    assert set(decoded) == set(batch)
    for name, value in batch.items():
        assert decoded[name].dtype == value.dtype
        np.testing.assert_array_equal(decoded[name], value)

    served = run_signature_with_session_loader(export_dir, decoded, wire.model_spec.signature_name)
    expected = model(batch, training=False)
    for name in ("score", "logits"):
        np.testing.assert_allclose(served[name], np.asarray(expected[name]), atol=1e-5)


def test_unknown_signature_names_the_available_ones(exported, batch):
    with pytest.raises(KeyError, match=r"signature_key='predict'.*one of \['serving_default'\]"):
        run_signature_with_session_loader(exported[0], batch, "predict")


def test_unknown_and_missing_inputs_name_the_expected_ones(exported, batch):
    inputs = {"feature": batch["features"], "task_id": batch["task_id"]}
    with pytest.raises(
        ValueError,
        match=r"expected exactly \['features', 'task_id'\]\. "
        r"Received: unknown=\['feature'\], missing=\['features'\]",
    ):
        run_signature_with_session_loader(exported[0], inputs)


def test_mismatched_dtype_is_rejected_not_cast(exported, batch):
    inputs = {**batch, "task_id": batch["task_id"].astype(np.float32) + 0.5}
    with pytest.raises(ValueError, match=r"'task_id' with dtype float32, expected int32"):
        run_signature_with_session_loader(exported[0], inputs)


def test_wrong_shape_reaches_the_graph_checks_as_in_tf_serving(exported, batch):
    # `Session.run(feed_dict=...)` would refuse it in Python; TF Serving feeds it as it comes.
    inputs = {**batch, "features": batch["features"][:, :3]}
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"Input `features` of signature `serving_default` must have shape "
                             r"\(n, 4\).*Received shape:\] \[5 3\]"):
        run_signature_with_session_loader(exported[0], inputs)


def test_tf_serving_rejects_a_dtype_mismatch_in_the_session(exported, batch, monkeypatch):
    """Without the loader's own dtype check, the C++ session refuses it, as in TF Serving."""

    def unchecked(signature, inputs, signature_key):
        return {name: np.asarray(value) for name, value in inputs.items()}

    monkeypatch.setattr(session_loader, "_feeds", unchecked)
    inputs = {**batch, "task_id": batch["task_id"].astype(np.float32)}
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"(?s)Type mismatch: actual float vs\. expect int32.*task_id"):
        run_signature_with_session_loader(exported[0], inputs)


def test_one_load_serves_many_requests(exported, batch):
    export_dir, model = exported
    with LoadedSavedModel(export_dir) as served:
        assert sorted(served.signatures) == ["serving_default"]
        for rows in (5, 2, 1):
            inputs = {k: v[:rows] for k, v in batch.items()}
            outputs = served.run(inputs)
            np.testing.assert_allclose(outputs["score"], np.asarray(model(inputs)["score"]),
                                       atol=1e-5)


def test_cli_writes_outputs_and_reports_errors(exported, batch, tmp_path, capsys):
    export_dir, model = exported
    inputs_path, outputs_path = str(tmp_path / "in.npz"), str(tmp_path / "out.npz")
    np.savez(inputs_path, **batch)
    argv = ["--export_dir", export_dir, "--inputs", inputs_path, "--outputs", outputs_path]

    assert main(argv) == 0
    with np.load(outputs_path) as outputs:
        assert sorted(outputs.files) == ["logits", "score"]
        expected = np.asarray(model(batch)["score"])
        np.testing.assert_allclose(outputs["score"], expected, atol=1e-5)

    assert main([*argv, "--signature", "missing"]) == 2
    assert "error: Received an unknown signature_key='missing'" in capsys.readouterr().err

    np.savez(inputs_path, **{**batch, "features": batch["features"][:, :2]})
    assert main(argv) == 2
    assert "error: assertion failed: [Input `features`" in capsys.readouterr().err


def test_fresh_process_failure_carries_stderr_tail(exported, batch):
    with pytest.raises(
        RuntimeError, match=r"(?s)exit code 2.*Stderr tail:.*signature_key='missing'"
    ):
        serve_in_fresh_process(exported[0], batch, "missing")
