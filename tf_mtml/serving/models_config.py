"""The TF Serving model config file (`--model_config_file`) for exported models.

`tensorflow_model_server --model_config_file=MODEL_DIR/export/models.config` serves the model
under its `name` from `base_path`, loading the highest integer version inside it (and any newer
one the export later writes). The file is a text-format
`tensorflow.serving.ModelServerConfig`; it sits beside the versions in the export base, where
TF Serving ignores it (only integer names are versions).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tf_mtml._files import atomic_write_text

MODELS_CONFIG_FILE = "models.config"
# The name is a path segment of the REST API (/v1/models/<name>): keep it URL- and file-safe.
_MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


def check_model_name(name: str) -> str:
    """Returns `name` if TF Serving can serve a model under it, else raises a `ValueError`."""
    if not isinstance(name, str) or not _MODEL_NAME_PATTERN.fullmatch(name):
        raise ValueError(
            "Received an invalid model name, expected letters, digits, '_', '.' or '-' (it is "
            "a path segment of the REST API /v1/models/<name>), e.g. the experiment name. "
            f"Received: name={name!r}"
        )
    return name


def models_config(models: Mapping[str, str]) -> model_server_config_pb2.ModelServerConfig:
    """The `ModelServerConfig` serving each `{name: base_path}` of `models`.

    Args:
        models: Model name -> absolute base path (the directory holding the versions).

    Returns:
        The config proto, models in sorted name order.
    """
    if not models:
        raise ValueError("Received no models; a TF Serving config needs at least one "
                         "{name: base_path} entry.")
    config = model_server_config_pb2.ModelServerConfig()
    for name in sorted(models):
        check_model_name(name)
        if not os.path.isabs(models[name]):
            raise ValueError(
                f"Received a relative base_path for model {name!r}; TF Serving resolves it "
                "against its own working directory, so pass an absolute path. Received: "
                f"base_path={models[name]!r}"
            )
        entry = config.model_config_list.config.add()
        entry.name = name
        entry.base_path = models[name]
        entry.model_platform = "tensorflow"
    return config


def models_config_text(models: Mapping[str, str]) -> str:
    """`models_config(models)` in the text format `--model_config_file` reads."""
    return text_format.MessageToString(models_config(models))


def parse_models_config(text: str) -> model_server_config_pb2.ModelServerConfig:
    """Parses a text-format model config file, as `tensorflow_model_server` does."""
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def write_models_config(export_base: str, model_name: str) -> str:
    """Writes `export_base/models.config` serving `export_base` as `model_name`, atomically.

    Args:
        export_base: The directory holding the versions (`MODEL_DIR/export`).
        model_name: The name clients address, e.g. the experiment name.

    Returns:
        The path of the written file.

    Example:

    ```python
    write_models_config("/runs/mmoe/export", "mmoe_synthetic")
    # tensorflow_model_server --port=8500 --model_config_file=/runs/mmoe/export/models.config
    ```
    """
    export_base = os.path.abspath(export_base)
    text = models_config_text({model_name: export_base})
    return atomic_write_text(os.path.join(export_base, MODELS_CONFIG_FILE), text)
