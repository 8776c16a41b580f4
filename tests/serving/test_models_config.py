"""Tests for tf_mtml.serving.models_config: the `--model_config_file` TF Serving reads."""

import os

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tf_mtml.serving.export import list_versions
from tf_mtml.serving.models_config import (
    MODELS_CONFIG_FILE,
    check_model_name,
    models_config,
    models_config_text,
    parse_models_config,
    write_models_config,
)

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _entries(config):
    return [(c.name, c.base_path, c.model_platform) for c in config.model_config_list.config]


def _parse(path):
    with open(path) as f:
        return text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())


def test_written_config_serves_the_export_base_under_the_name(tmp_path):
    base = tmp_path / "export"
    os.makedirs(base / "1")
    path = write_models_config(str(base), "mmoe_synthetic")
    assert path == str(base / MODELS_CONFIG_FILE)
    assert _entries(_parse(path)) == [("mmoe_synthetic", str(base), "tensorflow")]
    # TF Serving only loads integer children: the config file is not a version.
    assert list_versions(str(base)) == [1]


def test_rewrite_replaces_the_file_atomically_and_leaves_no_temporary(tmp_path, monkeypatch):
    base = tmp_path / "export"
    os.makedirs(base)
    write_models_config(str(base), "first")
    write_models_config(str(base), "second")
    assert sorted(os.listdir(base)) == [MODELS_CONFIG_FILE]
    assert _entries(_parse(base / MODELS_CONFIG_FILE))[0][0] == "second"

    def fail(src, dst):
        raise OSError("injected")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="injected"):
        write_models_config(str(base), "third")
    assert sorted(os.listdir(base)) == [MODELS_CONFIG_FILE]
    assert _entries(_parse(base / MODELS_CONFIG_FILE))[0][0] == "second"


def test_relative_export_base_is_written_as_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("run/export")
    path = write_models_config(os.path.join("run", "export"), "m")
    assert _entries(_parse(path)) == [("m", str(tmp_path / "run" / "export"), "tensorflow")]


def test_several_models_in_sorted_order_and_text_round_trip():
    config = models_config({"ranker": "/models/ranker", "embedder": "/models/embedder"})
    assert _entries(config) == [("embedder", "/models/embedder", "tensorflow"),
                                ("ranker", "/models/ranker", "tensorflow")]
    assert parse_models_config(models_config_text({"a": "/a"})) == models_config({"a": "/a"})


def test_repository_config_documents_the_default_experiment_for_docker():
    path = os.path.join(REPOSITORY, "export", "tf_serving", "models.config")
    assert _parse(path) == models_config({"mmoe_synthetic": "/models/mmoe_synthetic/export"})


@pytest.mark.parametrize("name", ["", "my model", "a/b", "-lead", None, 3])
def test_invalid_model_name_is_rejected(name):
    with pytest.raises(ValueError, match=rf"invalid model name.*Received: name={name!r}"):
        check_model_name(name)
    if isinstance(name, str):
        with pytest.raises(ValueError, match="invalid model name"):
            models_config({name: "/models/x"})


def test_relative_base_path_and_empty_config_are_rejected():
    with pytest.raises(ValueError, match=r"relative base_path for model 'm'.*'models/m'"):
        models_config({"m": "models/m"})
    with pytest.raises(ValueError, match="at least one"):
        models_config({})
