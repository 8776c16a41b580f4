"""Tests for export.grpc_client, offline: requests are built from an export, and sent to an
in-process gRPC PredictionService on localhost that runs them with the session loader."""

from concurrent import futures

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from export.grpc_client import build_request, predict
from tests.serving.conftest import INPUT_SIGNATURE, build_functional_model
from tf_mtml.serving.export import export_saved_model
from tf_mtml.serving.session_loader import (
    LoadedSavedModel,
    inputs_from_predict_request,
    save_npz,
)

SCALED = {"features": tf.TensorSpec((None, 4), tf.float32)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(export base, model, batch): versions 1 and 2, the latest with other warmup rows."""
    model = build_functional_model()
    rng = np.random.default_rng(0)
    batch = {"features": rng.normal(size=(3, 4)).astype(np.float32),
             "task_id": np.array([2, 0, 1], np.int32)}
    base = str(tmp_path_factory.mktemp("export"))
    for rows in (1, 3):
        rows_batch = {k: v[:rows] for k, v in batch.items()}
        export_saved_model(
            model, base, input_signature=INPUT_SIGNATURE,
            extra_endpoints={"scaled": (lambda d: {"doubled": 2.0 * d["features"]}, SCALED)},
            warmup_examples={"serving_default": rows_batch,
                             "scaled": {"features": rows_batch["features"]}},
            model_name="warmup_name")
    return base, model, batch


class _Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """TF Serving's Predict, played by the session loader on one version."""

    def __init__(self, export_dir):
        self.served = LoadedSavedModel(export_dir)
        self.model_names = []

    def Predict(self, request, context):  # noqa: N802 (the gRPC method name)
        self.model_names.append(request.model_spec.name)
        outputs = self.served.run(inputs_from_predict_request(request),
                                  request.model_spec.signature_name)
        response = predict_pb2.PredictResponse()
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
        return response


def test_request_is_the_latest_versions_warmup_request_renamed(exported):
    base, _, batch = exported
    request = build_request("mmoe_synthetic", "serving_default", export_dir=base)
    assert request.model_spec.name == "mmoe_synthetic"
    assert request.model_spec.signature_name == "serving_default"
    inputs = inputs_from_predict_request(request)
    assert inputs["task_id"].dtype == np.int32
    for name, value in batch.items():  # Version 2's three rows, not version 1's one.
        np.testing.assert_array_equal(inputs[name], value)
    one_row = inputs_from_predict_request(build_request("m", "scaled", export_dir=f"{base}/1"))
    np.testing.assert_array_equal(one_row["features"], batch["features"][:1])


def test_request_from_an_npz_of_arrays(exported, tmp_path):
    _, _, batch = exported
    path = str(tmp_path / "batch.npz")
    save_npz(path, batch)
    request = build_request("ranker", "serving_default", inputs_path=path)
    assert request.model_spec.name == "ranker"
    assert sorted(request.inputs) == ["features", "task_id"]
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["features"]),
                                  batch["features"])


def test_bad_arguments_say_what_to_pass(exported):
    base, _, _ = exported
    with pytest.raises(ValueError, match="Pass exactly one source of inputs"):
        build_request("m", "serving_default")
    with pytest.raises(ValueError, match="Pass exactly one source of inputs"):
        build_request("m", "serving_default", export_dir=base, inputs_path="batch.npz")
    with pytest.raises(ValueError, match=r"signature='few_shot'.*serves \['scaled', "
                                         r"'serving_default'\]. Pass one of them"):
        build_request("m", "few_shot", export_dir=base)


def test_predict_over_grpc_returns_the_models_outputs(exported):
    base, model, batch = exported
    servicer = _Servicer(f"{base}/2")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("localhost:0")
    server.start()
    try:
        for signature in ("serving_default", "scaled"):
            request = build_request("mmoe_synthetic", signature, export_dir=base)
            outputs = predict(f"localhost:{port}", request, timeout=30)
            if signature == "scaled":
                np.testing.assert_allclose(outputs["doubled"], 2 * batch["features"], atol=1e-6)
                continue
            expected = model(batch, training=False)
            assert sorted(outputs) == ["logits", "score"]
            for name in outputs:
                np.testing.assert_allclose(outputs[name], np.asarray(expected[name]), atol=1e-5)
    finally:
        server.stop(None)
        servicer.served.close()
    assert servicer.model_names == ["mmoe_synthetic", "mmoe_synthetic"]
