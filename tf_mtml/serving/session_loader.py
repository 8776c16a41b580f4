"""Runs a SavedModel signature the way TF Serving loads it: the TF1 session-based loader.

TF Serving restores a version with `LoadSavedModel` into a `Session` and feeds/fetches the tensor
names listed in the SignatureDef. `tf.compat.v1.saved_model.loader.load` is the Python face of
that loader, so an export that runs here runs in TF Serving; `tf.saved_model.load` is not enough
(it can succeed on archives the session loader rejects).

`serve_in_fresh_process` runs the loader through this module's CLI in a new interpreter so that
nothing (registered ops, traced functions, global Keras state) leaks from the exporting process:

```
python -m tf_mtml.serving.session_loader --export_dir D --inputs in.npz --outputs out.npz
```

Requests are TF Serving `PredictRequest` protos (`tensorflow-serving-api`), so a test, or a warmup
file, can replay exactly what a client sends.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

_STDERR_TAIL_CHARS = 4000


def _feed_dict(signature, inputs: Mapping[str, np.ndarray], signature_key: str) -> dict:
    """Maps input names to the signature's tensor names, checking names and dtypes."""
    expected = sorted(signature.inputs)
    unknown = sorted(set(inputs) - set(expected))
    missing = sorted(set(expected) - set(inputs))
    if unknown or missing:
        raise ValueError(
            f"Received inputs that do not match signature {signature_key!r}: expected exactly "
            f"{expected}. Received: unknown={unknown}, missing={missing}"
        )
    feed = {}
    for name, value in inputs.items():
        value = np.asarray(value)
        dtype = tf.dtypes.as_dtype(signature.inputs[name].dtype).as_numpy_dtype
        # Session.run would cast silently (a float fed to an int32 input is truncated); TF
        # Serving rejects a mismatched dtype, so do the same.
        if value.dtype != dtype:
            raise ValueError(
                f"Received input {name!r} with dtype {value.dtype}, expected {np.dtype(dtype)} "
                f"as declared by signature {signature_key!r}. Cast it with "
                f"np.asarray(x, dtype=np.{np.dtype(dtype).name})."
            )
        feed[signature.inputs[name].name] = value
    return feed


def run_signature_with_session_loader(
    export_dir: str,
    inputs: Mapping[str, np.ndarray],
    signature_key: str = "serving_default",
) -> dict[str, np.ndarray]:
    """Loads `export_dir` with the session-based loader and runs one signature.

    Args:
        export_dir: A SavedModel (version) directory.
        inputs: Dict from SignatureDef input name to array; names and dtypes must match.
        signature_key: The signature to run.

    Returns:
        Dict from SignatureDef output name to the fetched array.

    Example:

    ```python
    outputs = run_signature_with_session_loader(
        "/models/ranker/1",
        {"features": np.zeros((2, 4), np.float32), "task_id": np.zeros((2,), np.int32)},
    )
    ```
    """
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], export_dir)
        signatures = {
            key: value
            for key, value in meta_graph.signature_def.items()
            if not key.startswith("__")
        }
        if signature_key not in signatures:
            raise KeyError(
                f"Received an unknown signature_key={signature_key!r} for the SavedModel at "
                f"{export_dir!r}, expected one of {sorted(signatures)}."
            )
        signature = signatures[signature_key]
        feed = _feed_dict(signature, inputs, signature_key)
        fetches = {name: info.name for name, info in signature.outputs.items()}
        return session.run(fetches, feed_dict=feed)


def predict_request(
    inputs: Mapping[str, np.ndarray],
    model_name: str,
    signature_name: str = "serving_default",
) -> predict_pb2.PredictRequest:
    """Builds the TF Serving gRPC `PredictRequest` a client would send for `inputs`.

    Args:
        inputs: Dict from SignatureDef input name to array (dtype kept as is).
        model_name: The served model name (`--model_name` of the server).
        signature_name: The signature to call.

    Returns:
        A `tensorflow_serving.apis.predict_pb2.PredictRequest`.
    """
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
    return request


def inputs_from_predict_request(request: predict_pb2.PredictRequest) -> dict[str, np.ndarray]:
    """Decodes the inputs of a `PredictRequest` back to numpy arrays, keyed by input name."""
    return {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}


def _save_npz(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Like `np.savez(path, **arrays)`, but any name works (`np.savez` reserves `file`)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", "w") as f:
                np.lib.format.write_array(f, np.asarray(value), allow_pickle=False)


def _stderr_tail(stderr: str | bytes | None) -> str:
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    return (stderr or "")[-_STDERR_TAIL_CHARS:]


def serve_in_fresh_process(
    export_dir: str,
    inputs: Mapping[str, np.ndarray],
    signature_key: str = "serving_default",
    timeout: float = 120,
) -> dict[str, np.ndarray]:
    """Runs `run_signature_with_session_loader` in a new Python process (`sys.executable`).

    Args:
        export_dir: A SavedModel (version) directory.
        inputs: Dict from SignatureDef input name to array.
        signature_key: The signature to run.
        timeout: Seconds before the subprocess is killed.

    Returns:
        Dict from SignatureDef output name to array.

    Raises:
        RuntimeError: The subprocess failed or timed out; the message ends with its stderr tail.
    """
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Keep C++ INFO lines out of the stderr tail.
    with tempfile.TemporaryDirectory(prefix="tf_mtml_serve_") as tmp:
        inputs_path = os.path.join(tmp, "inputs.npz")
        outputs_path = os.path.join(tmp, "outputs.npz")
        _save_npz(inputs_path, inputs)
        command = [
            # runpy warns that the package `__init__` already imported this module; harmless.
            sys.executable, "-W", "ignore::RuntimeWarning:runpy",
            "-m", "tf_mtml.serving.session_loader",
            "--export_dir", export_dir, "--inputs", inputs_path, "--outputs", outputs_path,
            "--signature", signature_key,
        ]  # fmt: skip
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, env=env, check=False
            )
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(
                f"The session loader did not finish within timeout={timeout}s for "
                f"{export_dir!r}. Stderr tail:\n{_stderr_tail(e.stderr)}"
            ) from e
        if result.returncode != 0:
            raise RuntimeError(
                f"The session loader failed (exit code {result.returncode}) for {export_dir!r}, "
                f"signature {signature_key!r}. Stderr tail:\n{_stderr_tail(result.stderr)}"
            )
        with np.load(outputs_path) as outputs:
            return {name: outputs[name] for name in outputs.files}


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: reads inputs from `.npz`, writes outputs to `.npz`; returns exit code."""
    # argparse, not absl flags: this module is importable library code, and defining global
    # absl flags on import could collide with the entry points' flags.
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export_dir", required=True, help="SavedModel version directory.")
    parser.add_argument("--inputs", required=True, help=".npz of arrays keyed by input name.")
    parser.add_argument("--outputs", required=True, help=".npz to write, keyed by output name.")
    parser.add_argument("--signature", default="serving_default", help="Signature key.")
    args = parser.parse_args(argv)
    with np.load(args.inputs) as data:
        inputs = {name: data[name] for name in data.files}
    try:
        outputs = run_signature_with_session_loader(args.export_dir, inputs, args.signature)
    except (KeyError, ValueError) as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    _save_npz(args.outputs, outputs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
