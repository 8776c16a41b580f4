"""Tests for tf_mtml.data.data_dir."""

import os

import pytest

from tf_mtml.data import data_dir as data_dir_module
from tf_mtml.data import resolve_data_dir


@pytest.fixture
def no_defaults(tmp_path, monkeypatch):
    """No env variable, a working directory and repository root without ../shared/data."""
    monkeypatch.delenv("TF_MTML_DATA_DIR", raising=False)
    work = tmp_path / "nowhere" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setattr(data_dir_module, "REPOSITORY_ROOT", tmp_path / "nowhere" / "repo")
    return tmp_path


def test_flag_then_env(no_defaults, monkeypatch):
    flag, env = no_defaults / "flag", no_defaults / "env"
    flag.mkdir()
    env.mkdir()
    monkeypatch.setenv("TF_MTML_DATA_DIR", str(env))
    assert resolve_data_dir(str(flag)) == str(flag.resolve())
    assert resolve_data_dir() == str(env.resolve())
    assert resolve_data_dir("") == str(env.resolve())


def test_shared_data_beside_the_working_directory_then_the_repository(no_defaults, monkeypatch):
    repo = no_defaults / "checkout" / "repo"
    repo.mkdir(parents=True)
    (no_defaults / "checkout" / "shared" / "data").mkdir(parents=True)
    monkeypatch.setattr(data_dir_module, "REPOSITORY_ROOT", repo)
    assert resolve_data_dir() == str((no_defaults / "checkout" / "shared" / "data").resolve())
    (no_defaults / "nowhere" / "shared" / "data").mkdir(parents=True)
    assert resolve_data_dir() == str((no_defaults / "nowhere" / "shared" / "data").resolve())


def test_repository_root_is_the_folder_with_pyproject():
    assert (data_dir_module.REPOSITORY_ROOT / "pyproject.toml").is_file()


def test_missing_everywhere_names_what_was_tried_and_the_fix(no_defaults):
    with pytest.raises(FileNotFoundError) as info:
        resolve_data_dir()
    message = str(info.value)
    for expected in ["--data_dir", "TF_MTML_DATA_DIR", "download_omniglot",
                     os.path.join("nowhere", "shared", "data")]:
        assert expected in message


def test_missing_flag_or_env_folder(no_defaults, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"'/does/not/exist' \(from --data_dir\)"):
        resolve_data_dir("/does/not/exist")
    monkeypatch.setenv("TF_MTML_DATA_DIR", "/neither/here")
    with pytest.raises(FileNotFoundError, match=r"'/neither/here' \(from \$TF_MTML_DATA_DIR\)"):
        resolve_data_dir()
