"""Runs a SavedModel signature the way TF Serving loads it: the TF1 session-based loader.

TF Serving restores a version with `LoadSavedModel` into a `Session` and feeds/fetches the tensor
names listed in the SignatureDef. `tf.compat.v1.saved_model.loader.load` is the Python face of
that loader, so an export that runs here runs in TF Serving; `tf.saved_model.load` is not enough
(it can succeed on archives the session loader rejects).

Requests are fed as TF Serving feeds them: straight to the C++ session (a callable made from
`CallableOptions`), without the shape check that `Session.run(feed_dict=...)` adds in Python. A
request of the wrong shape therefore reaches the graph, where the served signature's own checks
(`tf_mtml.serving.validation`) must reject it, as they must in TF Serving. A dtype that differs
from the SignatureDef's is refused before the session runs (TF Serving's session refuses it with
`Type mismatch: actual int32 vs. expect float`).

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
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2
from tensorflow_serving.apis import predict_pb2

_STDERR_TAIL_CHARS = 4000


def _feeds(signature, inputs: Mapping[str, np.ndarray], signature_key: str) -> dict:
    """`inputs` as arrays by input name, checked against the signature's names and dtypes."""
    expected = sorted(signature.inputs)
    unknown = sorted(set(inputs) - set(expected))
    missing = sorted(set(expected) - set(inputs))
    if unknown or missing:
        raise ValueError(
            f"Received inputs that do not match signature {signature_key!r}: expected exactly "
            f"{expected}. Received: unknown={unknown}, missing={missing}"
        )
    feeds = {}
    for name, value in inputs.items():
        value = np.asarray(value)
        dtype = tf.dtypes.as_dtype(signature.inputs[name].dtype).as_numpy_dtype
        if value.dtype != dtype:
            raise ValueError(
                f"Received input {name!r} with dtype {value.dtype}, expected {np.dtype(dtype)} "
                f"as declared by signature {signature_key!r}. Cast it with "
                f"np.asarray(x, dtype=np.{np.dtype(dtype).name})."
            )
        feeds[name] = value
    return feeds


class LoadedSavedModel:
    """One SavedModel version loaded into a TF1 session, as TF Serving holds it.

    Args:
        export_dir: A SavedModel (version) directory.

    Example:

    ```python
    with LoadedSavedModel("/models/ranker/1") as served:
        outputs = served.run({"features": x}, "serving_default")
    ```
    """

    def __init__(self, export_dir: str):
        self.export_dir = export_dir
        self._session = tf.compat.v1.Session(graph=tf.Graph())
        try:
            meta_graph = tf.compat.v1.saved_model.loader.load(self._session, ["serve"],
                                                               export_dir)
        except Exception:
            self._session.close()
            raise
        self.signatures = {key: value for key, value in meta_graph.signature_def.items()
                           if not key.startswith("__")}
        self._callables: dict[str, Callable] = {}

    def run(self, inputs: Mapping[str, np.ndarray],
            signature_key: str = "serving_default") -> dict[str, np.ndarray]:
        """Feeds `inputs` to one signature; returns its outputs by name."""
        if signature_key not in self.signatures:
            raise KeyError(
                f"Received an unknown signature_key={signature_key!r} for the SavedModel at "
                f"{self.export_dir!r}, expected one of {sorted(self.signatures)}."
            )
        signature = self.signatures[signature_key]
        feeds = _feeds(signature, inputs, signature_key)
        names, outputs = sorted(signature.inputs), sorted(signature.outputs)
        if signature_key not in self._callables:
            options = config_pb2.CallableOptions(
                feed=[signature.inputs[name].name for name in names],
                fetch=[signature.outputs[name].name for name in outputs])
            # `Session.run` and `make_callable` check feed shapes in Python; TF Serving's C++
            # `Session::Run` does not, and a callable made from options is that C++ path.
            self._callables[signature_key] = self._session._make_callable_from_options(options)
        values = self._callables[signature_key](*(feeds[name] for name in names))
        return dict(zip(outputs, values, strict=True))

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> LoadedSavedModel:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


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

    Raises:
        tf.errors.InvalidArgumentError: A check of the served graph rejected the request.

    Example:

    ```python
    outputs = run_signature_with_session_loader(
        "/models/ranker/1",
        {"features": np.zeros((2, 4), np.float32), "task_id": np.zeros((2,), np.int32)},
    )
    ```
    """
    with LoadedSavedModel(export_dir) as served:
        return served.run(inputs, signature_key)


def predict_request(
    inputs: Mapping[str, np.ndarray],
    model_name: str,
    signature_name: str = "serving_default",
) -> predict_pb2.PredictRequest:
    """Builds the TF Serving gRPC `PredictRequest` a client would send for `inputs`.

    Args:
        inputs: Dict from SignatureDef input name to array (dtype kept as is).
        model_name: The served model name (`name` in the server's model config).
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


def save_npz(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Like `np.savez(path, **arrays)`, but any name works (`np.savez` reserves `file`)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, value in arrays.items():
            value = np.asarray(value)
            if value.dtype == object:  # tf.string outputs: fixed-width bytes need no pickle.
                value = value.astype(bytes)
            with archive.open(f"{name}.npy", "w") as f:
                np.lib.format.write_array(f, value, allow_pickle=False)


def load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as arrays:
        return {name: arrays[name] for name in arrays.files}


def run_module_in_fresh_process(module: str, args: Sequence[str], timeout: float,
                                stdin_lines: Iterable[str] = ()) -> None:
    """Runs `python -m module *args` in a new interpreter that imports this package.

    Args:
        module: The module to run.
        args: Its command-line arguments.
        timeout: Seconds to wait for it once `stdin_lines` is exhausted.
        stdin_lines: Lines written to its stdin as they come (a generator may produce them
            while the process already works on the first ones); stdin is then closed.

    Raises:
        RuntimeError: The process failed or timed out; the message ends with its stderr tail.
    """
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # Keep C++ INFO lines out of the stderr tail.
    # runpy warns that the package `__init__` already imported the module; harmless.
    command = [sys.executable, "-W", "ignore::RuntimeWarning:runpy", "-m", module, *args]
    # A file, not a pipe: a pipe nobody reads while `stdin_lines` is produced could fill up.
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=stderr, env=env, text=True)
        try:
            try:
                for line in stdin_lines:
                    process.stdin.write(f"{line}\n")
                    process.stdin.flush()
                process.stdin.close()
            except BrokenPipeError:
                pass  # It exited early; its exit code and stderr say why.
            returncode = process.wait(timeout=timeout)
        except BaseException as e:
            process.kill()
            process.wait()
            if not isinstance(e, subprocess.TimeoutExpired):
                raise
            returncode = None
        stderr.seek(0)
        tail = stderr.read()[-_STDERR_TAIL_CHARS:]
    if returncode is None:
        raise RuntimeError(
            f"`python -m {module}` did not finish within timeout={timeout}s. Stderr tail:\n"
            f"{tail}"
        )
    if returncode != 0:
        raise RuntimeError(
            f"`python -m {module} {' '.join(args)}` failed (exit code {returncode}). "
            f"Stderr tail:\n{tail}"
        )


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
    with tempfile.TemporaryDirectory(prefix="tf_mtml_serve_") as tmp:
        inputs_path = os.path.join(tmp, "inputs.npz")
        outputs_path = os.path.join(tmp, "outputs.npz")
        save_npz(inputs_path, inputs)
        run_module_in_fresh_process(
            "tf_mtml.serving.session_loader",
            ["--export_dir", export_dir, "--inputs", inputs_path, "--outputs", outputs_path,
             "--signature", signature_key],
            timeout)
        return load_npz(outputs_path)


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
    try:
        outputs = run_signature_with_session_loader(args.export_dir, load_npz(args.inputs),
                                                    args.signature)
    except (KeyError, ValueError) as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    except tf.errors.InvalidArgumentError as e:  # A check of the served graph failed.
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    save_npz(args.outputs, outputs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
