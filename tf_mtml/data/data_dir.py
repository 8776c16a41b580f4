"""Where real data sets live: a flag, the `TF_MTML_DATA_DIR` variable, or `../shared/data`."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "TF_MTML_DATA_DIR"
# The default layout keeps data beside the repository, never inside it.
DEFAULT_RELATIVE_DIR = Path("..", "shared", "data")
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def resolve_data_dir(flag_value: str | None = None) -> str:
    """The root folder of the real data sets.

    The first that is given wins: `flag_value` (e.g. `--data_dir`), then the environment
    variable `TF_MTML_DATA_DIR`; either must exist. Otherwise the first existing
    `../shared/data`, relative to the current directory, then to the repository root (the
    folder holding `pyproject.toml`).

    Args:
        flag_value: an explicit folder; `None` or `""` means not given.

    Returns:
        The absolute path of the data root.

    Raises:
        FileNotFoundError: naming every folder tried and how to provide one.

    Example:

    >>> resolve_data_dir("/data")  # doctest: +SKIP
    '/data'
    """
    if flag_value:
        return _existing(Path(flag_value), "--data_dir")
    if os.environ.get(DATA_DIR_ENV):
        return _existing(Path(os.environ[DATA_DIR_ENV]), f"${DATA_DIR_ENV}")
    candidates = [Path.cwd() / DEFAULT_RELATIVE_DIR, REPOSITORY_ROOT / DEFAULT_RELATIVE_DIR]
    for candidate in candidates:
        if candidate.is_dir():
            return str(candidate.resolve())
    tried = ", ".join(str(candidate.resolve()) for candidate in candidates)
    raise FileNotFoundError(
        f"No data directory found: no --data_dir flag, ${DATA_DIR_ENV} is unset, and none of "
        f"{tried} exists. Pass --data_dir=/path/to/data, set {DATA_DIR_ENV}=/path/to/data, or "
        "download the data set there (e.g. `tf_mtml.data.download_omniglot(path)`)."
    )


def _existing(path: Path, source: str) -> str:
    if not path.is_dir():
        raise FileNotFoundError(
            f"The data directory {str(path)!r} (from {source}) does not exist. Fix the path, "
            "or create it and download the data set there (e.g. "
            "`tf_mtml.data.download_omniglot(path)`)."
        )
    return str(path.resolve())
