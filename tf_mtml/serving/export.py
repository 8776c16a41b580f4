"""SavedModel export laid out for TF Serving: `<export_base>/<version>/`.

TF Serving's file-system source polls `export_base` and loads every child whose name parses as
an integer (`strings::safe_strto64`, see `tensorflow_serving/sources/storage_path/
file_system_storage_path_source.cc`); everything else is skipped. A version is therefore written
under a dot-prefixed sibling name that never parses, then renamed into place, so a polling server
never sees a half-written version.

The archive is built with `keras.export.ExportArchive`; the session-based loader that TF Serving
uses reads it (see `tf_mtml.serving.session_loader`), which a hand-written `tf.saved_model.save`
wrapper does not guarantee. Every signature checks the shape of each input (and that float inputs
are finite) inside the graph (`tf_mtml.serving.validation`): TF Serving itself checks only dtypes.
With `warmup_examples`, the version carries TF Serving's warmup file (`tf_mtml.serving.warmup`),
written before the rename like the rest of the version.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping

import keras
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from tf_mtml.serving.validation import checked_inputs
from tf_mtml.serving.warmup import Examples, check_warmup_examples, write_warmup_requests

SERVING_DEFAULT = "serving_default"

# `safe_strto64` accepts surrounding whitespace and a sign, so " 7" or "+7" would be a version
# for TF Serving too; mirror it so that no child TF Serving would load is missed.
_VERSION_PATTERN = re.compile(r"\s*[+-]?[0-9]+\s*")
_INT64_MAX = 2**63 - 1
_TEMP_PREFIX = ".tmp-export-"
# Signature inputs are tf.function parameters: other names get sanitized or rejected by TF.
_INPUT_NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]*")

Endpoint = tuple[Callable[[dict], dict], Mapping[str, tf.TensorSpec]]


def _parse_version(name: str) -> int | None:
    if not _VERSION_PATTERN.fullmatch(name):
        return None
    version = int(name)
    return version if -_INT64_MAX - 1 <= version <= _INT64_MAX else None


def list_versions(export_base: str) -> list[int]:
    """Versions TF Serving would find under `export_base`, sorted ascending.

    Args:
        export_base: The model base path given to TF Serving (`--model_base_path`).

    Returns:
        The sorted distinct integer versions; `[]` when `export_base` does not exist. Temporary
        export directories (dot-prefixed) are never listed.
    """
    if not os.path.isdir(export_base):
        return []
    versions = {_parse_version(name) for name in os.listdir(export_base)}
    return sorted(v for v in versions if v is not None)


def latest_version(export_base: str) -> int | None:
    """The largest version under `export_base` (the one TF Serving serves by default), or None."""
    versions = list_versions(export_base)
    return versions[-1] if versions else None


def read_signature_defs(export_dir: str) -> dict[str, meta_graph_pb2.SignatureDef]:
    """Reads the `serve` MetaGraph's SignatureDefs, as `saved_model_cli show` prints them.

    Args:
        export_dir: A SavedModel directory (one version directory).

    Returns:
        A dict from signature key to `SignatureDef` proto, without the internal
        `__saved_model_init_op` entry.
    """
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return {
                key: signature
                for key, signature in meta_graph.signature_def.items()
                if not key.startswith("__")
            }
    raise ValueError(
        f"The SavedModel at {export_dir!r} has no MetaGraph tagged 'serve', which TF Serving "
        "requires. Export it with `export_saved_model`."
    )


def _named_specs(endpoint: str, input_signature: Mapping) -> dict[str, tf.TensorSpec]:
    """Validates an input signature and names each spec after its key."""
    if not isinstance(input_signature, Mapping) or not input_signature:
        raise ValueError(
            f"Received an invalid value for the input signature of endpoint {endpoint!r}, "
            "expected a non-empty dict from input name to `tf.TensorSpec`. "
            f"Received: input_signature={input_signature!r}"
        )
    specs = {}
    for key, spec in input_signature.items():
        if not isinstance(key, str) or not _INPUT_NAME_PATTERN.fullmatch(key):
            raise ValueError(
                f"Received an invalid input name for endpoint {endpoint!r}, expected a string "
                "matching [A-Za-z][A-Za-z0-9_]* (TF turns inputs into function parameters). "
                f"Rename it, e.g. 'task_id'. Received: key={key!r}"
            )
        if not isinstance(spec, tf.TensorSpec) or spec.shape.rank in (None, 0):
            raise ValueError(
                f"Received an invalid spec for input {key!r} of endpoint {endpoint!r}, "
                "expected a `tf.TensorSpec` of known rank >= 1 whose first dimension is the "
                f"batch, e.g. tf.TensorSpec((None, 4), tf.float32). Received: {spec!r}"
            )
        if spec.shape[0] is not None:
            raise ValueError(
                f"Received a fixed batch dimension for input {key!r} of endpoint {endpoint!r}; "
                "TF Serving batches requests, so the first dimension must be None. "
                f"Received: shape={spec.shape}"
            )
        if spec.name not in (None, key):
            raise ValueError(
                f"Received a `tf.TensorSpec` named {spec.name!r} under key {key!r} of endpoint "
                f"{endpoint!r}; the key is the serving input name. Drop `name=` or make it "
                "equal to the key."
            )
        # Without a name the SignatureDef would call the inputs `inputs`, `inputs_1`, ...
        specs[key] = tf.TensorSpec(spec.shape, spec.dtype, name=key)
    return specs


def _dict_endpoint(endpoint: str, fn: Callable[[dict], dict],
                   specs: Mapping[str, tf.TensorSpec]) -> Callable[[dict], dict]:
    """Wraps `fn`: called with a plain dict of checked inputs, it must return a dict of tensors."""

    def serve(inputs: dict) -> dict:
        outputs = fn(checked_inputs(endpoint, inputs, specs))
        if not isinstance(outputs, Mapping) or not all(isinstance(k, str) for k in outputs):
            raise ValueError(
                f"The function of endpoint {endpoint!r} must return a dict from output name "
                "to tensor, which become the SignatureDef's named outputs. Return e.g. "
                f"{{'score': y}}. Received: {type(outputs).__name__} {outputs!r}"
            )
        return dict(outputs)

    return serve


def _default_serve_fn(model: keras.Model) -> Callable[[dict], dict]:
    def serve(inputs: dict) -> dict:
        return model(inputs, training=False)

    return serve


def _verify_signature(export_dir: str, endpoint: str, inputs: set[str], outputs: set[str]):
    signature = read_signature_defs(export_dir)[endpoint]
    got_inputs, got_outputs = set(signature.inputs), set(signature.outputs)
    if got_inputs != inputs or got_outputs != outputs:
        raise ValueError(
            f"The exported SignatureDef {endpoint!r} does not carry the requested names, so "
            f"clients could not address them; rename the keys. Expected inputs {sorted(inputs)} "
            f"and outputs {sorted(outputs)}. Received: inputs {sorted(got_inputs)} and outputs "
            f"{sorted(got_outputs)}"
        )


def _resolve_version(export_base: str, version: int | None) -> int:
    existing = list_versions(export_base)
    if version is None:
        return max(existing, default=0) + 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(
            "Received an invalid value for `version`, expected a non-negative integer or None "
            f"(None picks 1 + the latest version). Received: version={version!r}"
        )
    if version in existing:
        raise FileExistsError(
            f"Version {version} already exists under {export_base!r}; exported versions are "
            "immutable because TF Serving may be serving them. Pass another `version` or "
            f"version=None (next free: {max(existing) + 1})."
        )
    return version


def export_saved_model(
    model: keras.Model,
    export_base: str,
    *,
    input_signature: Mapping[str, tf.TensorSpec],
    serve_fn: Callable[[dict], dict] | None = None,
    extra_endpoints: Mapping[str, Endpoint] | None = None,
    version: int | None = None,
    warmup_examples: Examples | None = None,
    model_name: str = "",
) -> str:
    """Exports `model` as version `<export_base>/<version>/` for TF Serving, atomically.

    The `serving_default` signature takes the named inputs of `input_signature` (batch dimension
    None) and returns one named output per key of the dict `serve_fn` returns. Every signature
    first asserts that each input has its declared inner shape and that float inputs are
    finite. The version is written to a dot-prefixed temporary sibling (ignored by TF Serving
    and `list_versions`), with its warmup file, its SignatureDef names are checked, and it is
    then renamed into place.

    Args:
        model: The Keras model; its variables are tracked by the archive.
        export_base: The model base path TF Serving polls; created when missing. A local
            path: the final rename is atomic only within one POSIX file system.
        input_signature: Dict from input name to `tf.TensorSpec` with a None batch dimension.
            The keys become the SignatureDef input names.
        serve_fn: Maps the dict of input tensors to a dict of output tensors. Defaults to
            `model(inputs, training=False)`, which must then return a dict.
        extra_endpoints: Extra signatures, `{name: (fn, input_signature)}`, with the same
            dict-in / dict-out contract as `serve_fn`, e.g. an embedding endpoint.
        version: The version to write. Defaults to 1 + the largest existing version (1 when
            none). An existing version is never overwritten.
        warmup_examples: `{signature: {input: array}}`, one request for every signature
            (real examples: TF Serving refuses a version whose warmup fails), written to
            `<version>/assets.extra/tf_serving_warmup_requests`. None writes no warmup file.
        model_name: The model name put in the warmup requests (TF Serving does not read it
            there; it makes each record a complete client request).

    Returns:
        The path of the written version directory.

    Example:

    ```python
    path = export_saved_model(
        model,
        "/models/ranker",
        input_signature={
            "features": tf.TensorSpec((None, 4), tf.float32),
            "task_id": tf.TensorSpec((None,), tf.int32),
        },
    )  # "/models/ranker/1"
    ```
    """
    extra_endpoints = dict(extra_endpoints or {})
    if SERVING_DEFAULT in extra_endpoints:
        raise ValueError(
            f"Received an extra endpoint named {SERVING_DEFAULT!r}; that signature is built "
            "from `serve_fn` and `input_signature`. Rename the extra endpoint."
        )
    for name, endpoint in extra_endpoints.items():
        if not isinstance(endpoint, tuple) or len(endpoint) != 2 or not callable(endpoint[0]):
            raise ValueError(
                f"Received an invalid value for extra endpoint {name!r}, expected a tuple "
                f"(fn, input_signature) with a callable fn. Received: {endpoint!r}"
            )
    serve_fn = serve_fn or _default_serve_fn(model)
    endpoints = {SERVING_DEFAULT: (serve_fn, input_signature), **extra_endpoints}
    specs = {name: _named_specs(name, signature) for name, (_, signature) in endpoints.items()}
    if warmup_examples is not None:
        check_warmup_examples(warmup_examples, specs)
    archive = keras.export.ExportArchive()
    archive.track(model)
    expected = {}
    for name, (fn, _) in endpoints.items():
        traced = archive.add_endpoint(name, _dict_endpoint(name, fn, specs[name]),
                                      input_signature=[specs[name]])
        outputs = traced.get_concrete_function().structured_outputs
        expected[name] = (set(specs[name]), set(outputs))

    os.makedirs(export_base, exist_ok=True)
    version = _resolve_version(export_base, version)
    final_dir = os.path.join(export_base, str(version))
    temp_dir = os.path.join(export_base, f"{_TEMP_PREFIX}{version}-{uuid.uuid4().hex}")
    try:
        archive.write_out(temp_dir, verbose=False)
        if warmup_examples is not None:
            write_warmup_requests(temp_dir, warmup_examples, model_name)
        for name, (inputs, outputs) in expected.items():
            _verify_signature(temp_dir, name, inputs, outputs)
        # Another writer may have taken the version meanwhile; re-check right before renaming.
        _resolve_version(export_base, version)
        os.rename(temp_dir, final_dir)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    return final_dir
