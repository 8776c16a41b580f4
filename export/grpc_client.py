"""A TF Serving gRPC client for an exported experiment: sends one `PredictRequest`, prints outputs.

Export the default experiment, then serve it with the `models.config` written beside the versions:

    python -m trainers.train --experiment=mmoe_synthetic --model_dir=/tmp/mmoe --mode=export
    tensorflow_model_server --port=8500 --model_config_file=/tmp/mmoe/export/models.config

(or with Docker, the repository's `export/tf_serving/models.config` names the mount point:
`docker run -p 8500:8500 -v /tmp/mmoe/export:/models/mmoe_synthetic/export
-v $PWD/export/tf_serving:/config tensorflow/serving --model_config_file=/config/models.config`),
then send the export's warmup request of a signature (real examples of the task):

    python -m export.grpc_client --server=localhost:8500 --model_name=mmoe_synthetic \\
        --signature=serving_default --export_dir=/tmp/mmoe/export

or your own arrays, one per signature input: `--inputs=batch.npz`.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import tensorflow as tf
from absl import app, flags
from tensorflow_serving.apis import predict_pb2

from tf_mtml.serving.export import latest_version, list_versions
from tf_mtml.serving.session_loader import load_npz, predict_request
from tf_mtml.serving.warmup import read_warmup_requests

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("server", "localhost:8500", "host:port of TF Serving's gRPC API.")
    flags.DEFINE_string("model_name", "mmoe_synthetic", "Served model name (`name` in "
                        "models.config; the experiment name for exports of this project).")
    flags.DEFINE_string("signature", "serving_default", "Signature to call, e.g. task_score, "
                        "few_shot, ood_score.")
    flags.DEFINE_string("export_dir", None, "MODEL_DIR/export (its latest version) or a version "
                        "directory: send its warmup request of --signature.")
    flags.DEFINE_string("inputs", None, ".npz with one array per signature input to send.")
    flags.DEFINE_float("timeout", 10.0, "Seconds to wait for the response.")


def _version_dir(export_dir: str) -> str:
    """`export_dir` itself if it is a version, else its latest version."""
    if list_versions(export_dir):
        return os.path.join(export_dir, str(latest_version(export_dir)))
    return export_dir


def build_request(model_name: str, signature: str, export_dir: str | None = None,
                  inputs_path: str | None = None) -> predict_pb2.PredictRequest:
    """The `PredictRequest` for `signature` of `model_name`, from an export or an `.npz`.

    Args:
        model_name: The served model name.
        signature: The signature to call.
        export_dir: An export base (its latest version is read) or a version directory; its
            warmup request of `signature` is used. Exclusive with `inputs_path`.
        inputs_path: `.npz` of the arrays to send, keyed by input name.

    Returns:
        The request, ready for `PredictionServiceStub.Predict`.
    """
    if (export_dir is None) == (inputs_path is None):
        raise ValueError(
            "Pass exactly one source of inputs: export_dir (send the export's warmup request) "
            f"or inputs_path (an .npz). Received: export_dir={export_dir!r}, "
            f"inputs_path={inputs_path!r}"
        )
    if inputs_path is not None:
        return predict_request(load_npz(inputs_path), model_name, signature)
    requests = {r.model_spec.signature_name: r for r in read_warmup_requests(
        _version_dir(export_dir))}
    if signature not in requests:
        raise ValueError(
            f"Received signature={signature!r}, but the export at {export_dir!r} serves "
            f"{sorted(requests)}. Pass one of them."
        )
    request = predict_pb2.PredictRequest()
    request.CopyFrom(requests[signature])
    request.model_spec.name = model_name
    return request


def predict(server: str, request: predict_pb2.PredictRequest,
            timeout: float = 10.0) -> dict[str, np.ndarray]:
    """Sends `request` to TF Serving at `server` (host:port); returns the outputs by name."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(server) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=timeout)
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


def main(argv) -> int:
    del argv
    try:
        request = build_request(FLAGS.model_name, FLAGS.signature, FLAGS.export_dir,
                                FLAGS.inputs)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, value in sorted(predict(FLAGS.server, request, FLAGS.timeout).items()):
        print(f"{name} {value.dtype} {value.shape}:\n{value}")
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
