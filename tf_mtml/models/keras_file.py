"""`.keras` files that load with `safe_mode=True`: written atomically, verified before use.

A `.keras` file is the portable copy of a model: its config (JSON) rebuilds the objects, its
weights fill them. `keras.saving.load_model(path, safe_mode=True)` refuses files that would
run code they carry (Python lambdas), and Keras 3 only rebuilds custom classes registered with
`keras.saving.register_keras_serializable`. `save_keras_model` writes the file under a
temporary name beside `path`, loads it back in safe mode, checks that the loaded weights equal
the model's, and only then renames it to `path`: a file that does not load is never left
there, and a reader never sees a half-written one. Both functions also refuse `Lambda` layers,
even around a named function: such a layer runs Python code that the file does not hold.

Keras saves weights, not random-number-generator states (`keras.random.SeedGenerator`): a
model that samples at inference restarts its random stream when loaded.
"""

from __future__ import annotations

import json
import os
import uuid
import zipfile

import keras

# Imported for their registrations: every tf_mtml class a `.keras` file may name is then known
# to `load_keras_model`, in any process.
import tf_mtml.layers  # noqa: F401
import tf_mtml.losses  # noqa: F401
import tf_mtml.meta  # noqa: F401
import tf_mtml.models.multitask_model  # noqa: F401
import tf_mtml.weighting  # noqa: F401

KERAS_SUFFIX = ".keras"
_CONFIG_MEMBER = "config.json"
_FIX = (
    "To fix it, replace `Lambda` layers by small subclassed layers and Python lambdas "
    "(activations, initializers, losses, metrics) by named functions or classes; register "
    "every custom object with `@keras.saving.register_keras_serializable(package=...)` and "
    "give it a `get_config` returning every constructor argument (nested Keras objects "
    "through `keras.saving.serialize_keras_object`, rebuilt in `from_config`)."
)


def save_keras_model(model: keras.Model, path: str | os.PathLike) -> str:
    """Writes `model` to the `.keras` file `path`, atomically, once it loads in safe mode.

    The file is written as a dot-prefixed temporary sibling of `path`, loaded back with
    `keras.saving.load_model(..., safe_mode=True)` (compile config included), and its weights
    compared with the model's; only a file that passes replaces `path` (`os.replace`, atomic
    on one local file system). On failure `path` is left as it was and the temporary file is
    removed.

    Args:
        model: A built Keras model (call it on a batch first).
        path: Local file name ending in `.keras`; missing parent directories are created.

    Returns:
        `path`, as a string.

    Raises:
        ValueError: naming the offending layer or config and how to fix it, when the model
            holds a `Lambda` layer or a Python lambda, does not serialize, does not load in
            safe mode, or loads with other weights (state its config does not rebuild).

    Example:
        ```python
        save_keras_model(trainer.model, os.path.join(model_dir, "model.keras"))
        model = load_keras_model(os.path.join(model_dir, "model.keras"))
        ```
    """
    path = _check_path(path)
    _check_model(model)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temp_path = os.path.join(directory, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
    what = f"Model {model.name!r} was not written to {path!r}: its `.keras` file"
    try:
        try:
            model.save(temp_path)
        except Exception as e:
            raise ValueError(f"{what} cannot be written. {type(e).__name__}: {e}\n{_FIX}") from e
        _check_same_weights(model, _load_checked(temp_path, what), what)
        os.replace(temp_path, path)
    finally:
        if os.path.exists(temp_path):
            os.remove(temp_path)
    return path


def load_keras_model(path: str | os.PathLike) -> keras.Model:
    """Loads a `.keras` file with `safe_mode=True`, refusing `Lambda` layers and lambdas.

    The refusal holds even where `keras.config.enable_unsafe_deserialization()` was called.

    Args:
        path: A `.keras` file, e.g. one written by `save_keras_model`.

    Returns:
        The model, compiled if it was saved compiled.

    Raises:
        FileNotFoundError: when `path` does not exist.
        ValueError: when `path` is not a `.keras` zip archive, holds code, or does not load
            in safe mode; the message names the offending object and the fix.

    Example:
        ```python
        model = load_keras_model("/tmp/mmoe/model.keras")
        predictions = model.serve({"features": x})
        ```
    """
    path = _check_path(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"No `.keras` file at {path!r}. Check the path, or write the file with "
            "`tf_mtml.models.keras_file.save_keras_model(model, path)`."
        )
    return _load_checked(path, f"The `.keras` file {path!r}")


def unsafe_objects(config, owners: tuple[str, ...] = (), key: str = "") -> list[str]:
    """Where a serialized Keras object holds code: `Lambda` layers and Python lambdas.

    Args:
        config: A serialized Keras object, e.g. the JSON of a `.keras` file's `config.json`.
        owners: The named objects enclosing `config` (set by the recursion).
        key: The config key `config` sits under (set by the recursion).

    Returns:
        One line per offender, e.g. `"MultiTaskModel 'mtl' > Functional 'net' > Lambda
        'double': a Lambda layer"` or `"... > Dense 'out', key `activation`: a Python
        lambda"`; `[]` when the config holds no code.
    """
    if isinstance(config, list):
        return [line for value in config for line in unsafe_objects(value, owners, key)]
    if not isinstance(config, dict):
        return []
    if _is_lambda(config):
        return [f"{' > '.join(owners) or 'the model'}, key `{key}`: a Python lambda"]
    inner = config.get("config")
    name = inner.get("name") if isinstance(inner, dict) else None
    here = (*owners, f"{config.get('class_name')} {name!r}") if isinstance(name, str) else owners
    if config.get("class_name") == "Lambda" and str(config.get("module")).startswith("keras"):
        return [f"{' > '.join(here)}: a Lambda layer"]
    return [line for child_key, value in config.items()
            for line in unsafe_objects(value, here, child_key)]


def _is_lambda(config: dict) -> bool:
    """A serialized Python lambda: `__lambda__`, or the bare `{"value": [code, defaults,
    closure]}` that `keras.activations.serialize` leaves of one."""
    value = config.get("value")
    return config.get("class_name") == "__lambda__" or (
        set(config) == {"value"} and isinstance(value, list) and len(value) == 3
        and isinstance(value[0], str))


def _check_path(path) -> str:
    path = os.fspath(path)
    if not path.endswith(KERAS_SUFFIX):
        raise ValueError(
            f"Received an invalid value for `path`, expected a file name ending in "
            f"'{KERAS_SUFFIX}' (Keras picks the file format from it), e.g. "
            f"'model_dir/model.keras'. Received: path={path!r}"
        )
    if os.path.isdir(path):
        raise ValueError(
            f"Received an invalid value for `path`, expected a file, but {path!r} is a "
            f"directory. Pass a file name inside it, e.g. "
            f"{os.path.join(path, 'model' + KERAS_SUFFIX)!r}."
        )
    return path


def _check_model(model) -> None:
    if not isinstance(model, keras.Model):
        raise ValueError(
            "Received an invalid value for `model`, expected a `keras.Model` (wrap a layer in "
            f"a functional model first). Received: model={type(model).__name__}"
        )
    if not model.built:
        raise ValueError(
            f"Received an unbuilt model {model.name!r}: it has no weights to save yet. Call it "
            "on a batch of inputs (or `model.build(input_shape)`) first. Received: built=False"
        )


def _read_config(path: str, what: str) -> dict:
    try:
        with zipfile.ZipFile(path) as archive:
            if _CONFIG_MEMBER not in archive.namelist():
                raise ValueError(f"{what} is a zip archive without {_CONFIG_MEMBER}, not a "
                                 "`.keras` model file. Write model files with `save_keras_model`.")
            return json.loads(archive.read(_CONFIG_MEMBER))
    except zipfile.BadZipFile as e:
        raise ValueError(
            f"{what} is not a `.keras` model file (the zip archive `model.save` writes). A "
            "SavedModel export is a directory for `tf.saved_model.load`; a `.weights.h5` file "
            "goes to `model.load_weights`."
        ) from e


def _load_checked(path: str, what: str) -> keras.Model:
    offenders = unsafe_objects(_read_config(path, what))
    if offenders:
        listed = "\n  - ".join(offenders)
        raise ValueError(f"{what} holds Python code (a `.keras` file must load with "
                         f"`safe_mode=True` and run no code of its own):\n  - {listed}\n{_FIX}")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as e:
        raise ValueError(
            f"{what} does not load with `keras.saving.load_model(path, safe_mode=True)`. "
            f"{type(e).__name__}: {e}\n{_FIX}"
        ) from e


def _check_same_weights(model: keras.Model, loaded: keras.Model, what: str) -> None:
    """Raises unless `loaded` has `model`'s weights, in order: same dtypes, shapes and bits."""
    expected, actual = model.weights, loaded.weights
    if len(expected) != len(actual):
        raise ValueError(
            f"{what} loads with {len(actual)} weights, but the model has {len(expected)}: its "
            "config does not rebuild every layer. A constructor argument is missing from a "
            "`get_config`, or a layer was attached to the model after construction; create "
            "every layer in `__init__`/`build` from arguments that `get_config` returns."
        )
    for mine, theirs in zip(expected, actual, strict=True):
        mine_value = keras.ops.convert_to_numpy(mine)
        theirs_value = keras.ops.convert_to_numpy(theirs)
        if (mine_value.dtype != theirs_value.dtype or mine_value.shape != theirs_value.shape
                or mine_value.tobytes() != theirs_value.tobytes()):
            raise ValueError(
                f"{what} does not restore weight {mine.path!r} {mine_value.shape} "
                f"{mine_value.dtype}: it loads {theirs.path!r} {theirs_value.shape} "
                f"{theirs_value.dtype} with other values: the loaded model is built differently."
                " A constructor argument is likely missing from a `get_config`."
            )
