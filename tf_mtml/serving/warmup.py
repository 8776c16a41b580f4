"""TF Serving warmup requests: `<version>/assets.extra/tf_serving_warmup_requests`.

TF Serving replays this file when it loads a version, before the version serves traffic, so that
the first real requests do not pay for lazy initialisation (graph optimisation, kernel caches)
(https://www.tensorflow.org/tfx/serving/saved_model_warmup). The file is a TFRecord of
`PredictionLog(predict_log=PredictLog(request=PredictRequest))`, at most 1000 records. If a
record fails, the version does not load (the servable creator of
`tensorflow_serving/servables/tensorflow/saved_model_bundle_source_adapter.cc` returns
`RunSavedModelWarmup`'s status), so records must be real, valid requests:
`export_saved_model` writes one per signature, built from real examples of the task
(`serving_examples`), and checks them against the signatures first.

`replay_warmup_in_fresh_process` replays the records of many versions through the session
loader in one new interpreter, reading the version directories one per stdin line:

```
printf '/runs/a/export/1\n/runs/b/export/1\n' | python -m tf_mtml.serving.warmup --outputs o.npz
```
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from tf_mtml.serving.session_loader import (
    LoadedSavedModel,
    inputs_from_predict_request,
    load_npz,
    predict_request,
    run_module_in_fresh_process,
    save_npz,
)

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000

Examples = Mapping[str, Mapping[str, np.ndarray]]


def warmup_path(export_dir: str) -> str:
    """Where TF Serving looks for the warmup file of the version at `export_dir`."""
    return os.path.join(export_dir, WARMUP_DIR, WARMUP_FILE)


def check_warmup_examples(examples: Examples,
                          signatures: Mapping[str, Mapping[str, tf.TensorSpec]]) -> None:
    """Checks that `examples` give every signature one request that matches it.

    Args:
        examples: `{signature: {input: array}}`.
        signatures: `{signature: {input: tf.TensorSpec}}` of the export.

    Raises:
        ValueError: naming the signature or input that does not match, and how.
    """
    if not isinstance(examples, Mapping) or set(examples) != set(signatures):
        got = sorted(examples) if isinstance(examples, Mapping) else examples
        raise ValueError(
            "Received warmup examples that do not cover the signatures one to one: TF Serving "
            f"warms up each, so give one request for each of {sorted(signatures)}. "
            f"Received: {got!r}"
        )
    for key, specs in signatures.items():
        inputs = examples[key]
        if not isinstance(inputs, Mapping) or set(inputs) != set(specs):
            got = sorted(inputs) if isinstance(inputs, Mapping) else inputs
            raise ValueError(
                f"Received warmup inputs for signature {key!r} that do not match its inputs "
                f"{sorted(specs)}. Received: {got!r}"
            )
        for name, spec in specs.items():
            value = np.asarray(inputs[name])
            if value.dtype != spec.dtype.as_numpy_dtype or not value.shape or not len(value) or (
                    not spec.shape.is_compatible_with(value.shape)):
                raise ValueError(
                    f"Received a warmup input {name!r} of signature {key!r} with dtype "
                    f"{value.dtype} and shape {value.shape}, expected dtype "
                    f"{spec.dtype.name} and shape {tuple(spec.shape)} with at least one row. "
                    "Build it from real examples of that input."
                )


def warmup_records(examples: Examples, model_name: str) -> list[prediction_log_pb2.PredictionLog]:
    """One `PredictionLog` per signature, in sorted signature order."""
    records = [
        prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(
            request=predict_request(examples[key], model_name, key)))
        for key in sorted(examples)
    ]
    if not 0 < len(records) <= MAX_WARMUP_RECORDS:
        raise ValueError(
            f"TF Serving reads 1 to {MAX_WARMUP_RECORDS} warmup records. Received: "
            f"{len(records)} signatures' requests."
        )
    return records


def write_warmup_requests(export_dir: str, examples: Examples, model_name: str) -> str:
    """Writes `warmup_records(examples, model_name)` into the version at `export_dir`.

    Args:
        export_dir: The SavedModel version directory (before it is renamed into place).
        examples: `{signature: {input: array}}`, one request per signature.
        model_name: The served model name put in each request's `model_spec`.

    Returns:
        The path of the written file.
    """
    path = warmup_path(export_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for record in warmup_records(examples, model_name):
            writer.write(record.SerializeToString())
    return path


def read_warmup_requests(export_dir: str) -> list[predict_pb2.PredictRequest]:
    """The `PredictRequest`s of the warmup file of the version at `export_dir`, in order."""
    path = warmup_path(export_dir)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"The SavedModel at {export_dir!r} has no warmup file {WARMUP_DIR}/{WARMUP_FILE}. "
            "Export it with `export_saved_model(..., warmup_examples=...)`."
        )
    requests = []
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(raw)
        if log.WhichOneof("log_type") != "predict_log":
            raise ValueError(
                f"Warmup record {len(requests)} of {path!r} is a {log.WhichOneof('log_type')}, "
                "expected a predict_log (the Predict API these exports serve)."
            )
        requests.append(log.predict_log.request)
    return requests


def replay_warmup(export_dir: str) -> list[dict[str, np.ndarray]]:
    """Runs every warmup request through the session loader, as TF Serving does on load.

    Returns:
        The outputs of each record, in record order.
    """
    with LoadedSavedModel(export_dir) as served:
        return [served.run(inputs_from_predict_request(request),
                           request.model_spec.signature_name or "serving_default")
                for request in read_warmup_requests(export_dir)]


def replay_warmup_in_fresh_process(export_dirs: Iterable[str],
                                   timeout: float = 300) -> list[list[dict[str, np.ndarray]]]:
    """`replay_warmup` of each of `export_dirs`, all in one new Python process.

    The directories are handed over as `export_dirs` yields them, so a generator that exports
    one model after another has the process load each version while the next is exported.

    Args:
        export_dirs: SavedModel version directories.
        timeout: Seconds to wait for the process once `export_dirs` is exhausted.

    Returns:
        For each export, the outputs of each of its records.

    Raises:
        RuntimeError: A version failed to load or a record failed; the message ends with the
            process's stderr tail.
    """
    handed_over = []

    def lines():
        for export_dir in export_dirs:
            handed_over.append(export_dir)
            yield export_dir

    with tempfile.TemporaryDirectory(prefix="tf_mtml_warmup_") as tmp:
        outputs_path = os.path.join(tmp, "outputs.npz")
        run_module_in_fresh_process("tf_mtml.serving.warmup", ["--outputs", outputs_path],
                                    timeout, stdin_lines=lines())
        arrays = load_npz(outputs_path)
    replayed = [[] for _ in handed_over]
    for key in sorted(arrays, key=lambda k: tuple(int(i) for i in k.split(".")[:2])):
        export, record, name = key.split(".", 2)
        records = replayed[int(export)]
        if len(records) == int(record):
            records.append({})
        records[int(record)][name] = arrays[key]
    return replayed


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: replays the warmup files of the version directories given one per stdin line.

    Writes `<export index>.<record index>.<output name>` arrays to `--outputs` (`.npz`).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", required=True, help=".npz to write.")
    args = parser.parse_args(argv)
    arrays = {}
    for i, line in enumerate(sys.stdin):
        export_dir = line.rstrip("\n")
        try:
            replayed = replay_warmup(export_dir)
        except (FileNotFoundError, KeyError, ValueError, tf.errors.OpError) as e:
            message = e.message if isinstance(e, tf.errors.OpError) else e.args[0]
            print(f"error: warmup of {export_dir!r} failed: {message}", file=sys.stderr)
            return 2
        for j, outputs in enumerate(replayed):
            arrays.update({f"{i}.{j}.{name}": value for name, value in outputs.items()})
    save_npz(args.outputs, arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main())
