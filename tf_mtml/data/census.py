"""The UCI Census-Income (KDD) data set with the two task groups of the MMoE paper.

Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts", KDD 2018, sec. 6.2, https://doi.org/10.1145/3219819.3220007.
Only the UCI test file (99,762 rows) is used: it is re-split with a fixed seed into 60% train,
20% validation and 20% test. Group 1 predicts income > 50K and marital status "Never married";
group 2 predicts education at least college and "Never married". A group's label columns are
removed from its features, and so is `instance weight` (a survey weight, not a feature).

Features are one dense float32 vector per person: the seven UCI "continuous" columns
standardised with training-split statistics, then a one-hot block per nominal column (every
other column, the numeric codes included) whose vocabulary is the training split's values, so
a value never seen in training encodes as all zeros.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import gzip
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tf_mtml.data._common import check_seed, is_int
from tf_mtml.data.omniglot import _download

FILE_NAME = "census-income.test.gz"
CENSUS_URL = ("https://archive.ics.uci.edu/ml/machine-learning-databases/census-income-mld/"
              f"{FILE_NAME}")
NUM_ROWS = 99762
COLUMNS = (
    "age", "class of worker", "detailed industry recode", "detailed occupation recode",
    "education", "wage per hour", "enroll in edu inst last wk", "marital stat",
    "major industry code", "major occupation code", "race", "hispanic origin", "sex",
    "member of a labor union", "reason for unemployment", "full or part time employment stat",
    "capital gains", "capital losses", "dividends from stocks", "tax filer stat",
    "region of previous residence", "state of previous residence",
    "detailed household and family stat", "detailed household summary in household",
    "instance weight", "migration code-change in msa", "migration code-change in reg",
    "migration code-move within reg", "live in this house 1 year ago",
    "migration prev res in sunbelt", "num persons worked for employer",
    "family members under 18", "country of birth father", "country of birth mother",
    "country of birth self", "citizenship", "own business or self employed",
    "fill inc questionnaire for veteran's admin", "veterans benefits", "weeks worked in year",
    "year", "income",
)
# The UCI description's continuous attributes, less `instance weight`.
NUMERIC_COLUMNS = ("age", "wage per hour", "capital gains", "capital losses",
                   "dividends from stocks", "num persons worked for employer",
                   "weeks worked in year")
DROPPED_COLUMNS = ("instance weight",)
# "At least college" = any post-secondary schooling: the seven UCI categories from "Some college
# but no degree" up (33.5% of rows); high school and below, and "Children", count as 0.
COLLEGE_OR_ABOVE = (
    "Some college but no degree", "Associates degree-occup /vocational",
    "Associates degree-academic program", "Bachelors degree(BA AB BS)",
    "Masters degree(MA MS MEng MEd MSW MBA)", "Prof school degree (MD DDS DVM LLB JD)",
    "Doctorate degree(PhD EdD)",
)
# Task name -> (source column, values that make the label 1).
LABELS = {
    "income": ("income", ("50000+.",)),
    "marital": ("marital stat", ("Never married",)),
    "education": ("education", COLLEGE_OR_ABOVE),
}
GROUPS = {1: ("income", "marital"), 2: ("education", "marital")}
INCOME_VALUES = ("- 50000.", "50000+.")
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)


@dataclasses.dataclass(frozen=True)
class CensusIncome:
    """One task group of the census data, split and encoded (arrays are read-only).

    Attributes:
        group: 1 or 2.
        features: split name -> float32 `(n, num_features)`.
        labels: split name -> `{task: float32 (n,)}` of 0/1 labels, tasks `GROUPS[group]`.
        indices: split name -> int64 row numbers in the file, `(n,)`.
        feature_names: `num_features` names: `"<column>"` for a numeric column,
            `"<column>=<value>"` for a one-hot entry.
        numeric_mean, numeric_std: float64 `(7,)` training-split statistics of
            `NUMERIC_COLUMNS`.
    """

    group: int
    features: dict[str, np.ndarray]
    labels: dict[str, dict[str, np.ndarray]]
    indices: dict[str, np.ndarray]
    feature_names: tuple[str, ...]
    numeric_mean: np.ndarray
    numeric_std: np.ndarray

    @property
    def num_features(self) -> int:
        return len(self.feature_names)


def census_path(data_dir: str) -> Path:
    """`data_dir/census-income/census-income.test.gz`, or a `FileNotFoundError` saying how."""
    path = Path(data_dir) / "census-income" / FILE_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist. Download it with "
            f"`tf_mtml.data.download_census_income({str(data_dir)!r})` (from {CENSUS_URL}), or "
            "point --data_dir / $TF_MTML_DATA_DIR at a folder holding census-income/."
        )
    return path


def download_census_income(data_dir: str) -> str:
    """Downloads the UCI test file into `data_dir/census-income/` unless present.

    Returns:
        The path of the file.
    """
    target = Path(data_dir) / "census-income" / FILE_NAME
    if not target.exists():
        _download(CENSUS_URL, target, md5=None)
    return str(target)


class Column(NamedTuple):
    """A column as its sorted distinct values and one code per row: `values[codes]`."""

    values: np.ndarray
    codes: np.ndarray

    def numeric(self) -> np.ndarray:
        """The column as float64 `(rows,)`."""
        return self.values.astype(np.float64)[self.codes]


def read_census_columns(path: str | os.PathLike) -> dict[str, Column]:
    """Parses the gzipped CSV into `{column name: Column}`, values stripped of spaces.

    Raises:
        ValueError: when the file is not gzipped text, holds no row, or, naming the line, when
            a row does not have the 42 UCI columns, a numeric column holds a value that is not
            a finite number, or the income label is not one of `INCOME_VALUES`.
    """
    try:
        with gzip.open(path, "rt", newline="") as f:
            rows = list(csv.reader(f, skipinitialspace=True))
    except (gzip.BadGzipFile, EOFError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is not a readable gzipped CSV ({error}): the download was cut short or the "
            "file is not the UCI census-income data. Delete it and download it again "
            "(`tf_mtml.data.download_census_income`)."
        ) from error
    if not rows:
        raise ValueError(f"{path} holds no rows. The download was cut short; download it again.")
    for line, row in enumerate(rows, start=1):
        if len(row) != len(COLUMNS):
            raise ValueError(
                f"{path}, line {line}: expected {len(COLUMNS)} comma-separated columns, found "
                f"{len(row)}. The file is not the UCI census-income data; download it again."
            )
    # Every row has 42 values (checked above), so the transposition drops none.
    columns = zip(*rows, strict=True)
    parsed = {name: _column(values) for name, values in zip(COLUMNS, columns, strict=True)}
    for name in NUMERIC_COLUMNS:
        _check_values(path, name, parsed[name], _is_finite_number, "a finite number")
    _check_values(path, "income", parsed["income"], INCOME_VALUES.__contains__,
                  f"one of {list(INCOME_VALUES)}")
    return parsed


def _is_finite_number(value: str) -> bool:
    try:
        return bool(np.isfinite(float(value)))
    except ValueError:
        return False


def _check_values(path, name: str, column: Column, valid, expected: str) -> None:
    """Raises naming the first line whose value of column `name` is not `valid`."""
    bad = [code for code, value in enumerate(column.values) if not valid(value)]
    if bad:
        rows = np.flatnonzero(np.isin(column.codes, bad))
        raise ValueError(
            f"{path}, line {rows[0] + 1}: column {name!r} holds "
            f"{str(column.values[column.codes[rows[0]]])!r}, expected {expected} ({len(rows)} such "
            "rows). Left in, it would silently become a NaN feature or a wrong label: the file "
            "is damaged or not the UCI census-income data; download it again."
        )


def _column(raw: tuple[str, ...]) -> Column:
    # Coding the few distinct strings in Python beats building a numpy string array per column.
    first_seen: dict[str, int] = {}
    codes = np.fromiter((first_seen.setdefault(v, len(first_seen)) for v in raw), np.int64,
                        count=len(raw))
    values, order = np.unique([v.strip() for v in first_seen], return_inverse=True)
    return Column(values, order[codes])


def split_indices(num_rows: int, seed: int) -> dict[str, np.ndarray]:
    """A seeded permutation of `range(num_rows)` cut 60/20/20 into sorted index arrays."""
    check_seed(seed)
    order = np.random.default_rng([num_rows, seed]).permutation(num_rows)
    train_end = int(num_rows * SPLIT_FRACTIONS[0])
    validation_end = train_end + int(num_rows * SPLIT_FRACTIONS[1])
    parts = np.split(order, [train_end, validation_end])
    return {name: np.sort(part).astype(np.int64) for name, part in zip(SPLITS, parts, strict=True)}


def task_labels(columns: dict[str, Column], task: str) -> np.ndarray:
    """The 0/1 float32 labels of `task` (a key of `LABELS`) for every row."""
    name, positives = LABELS[task]
    column = columns[name]
    return np.isin(column.values, positives)[column.codes].astype(np.float32)


def encode_features(columns: dict[str, Column], group: int, train_rows: np.ndarray
                    ) -> tuple[np.ndarray, tuple[str, ...], np.ndarray, np.ndarray]:
    """Encodes every row, fitting the statistics and vocabularies on `train_rows` only.

    Returns:
        float32 features `(rows, d)`, their `d` names, numeric means and standard deviations.
    """
    excluded = {*DROPPED_COLUMNS, *(LABELS[task][0] for task in GROUPS[group])}
    numeric = np.stack([columns[c].numeric() for c in NUMERIC_COLUMNS], axis=1)
    mean = numeric[train_rows].mean(axis=0)
    std = numeric[train_rows].std(axis=0)
    std = np.where(std > 0, std, 1.0)  # A constant column encodes as zeros, not NaN.
    names = list(NUMERIC_COLUMNS)
    one_hot = []  # (column offset in the output, per-row slot or -1 for an unseen value)
    for name in COLUMNS:
        if name in excluded or name in NUMERIC_COLUMNS:
            continue
        column = columns[name]
        seen = np.unique(column.codes[train_rows])
        slot = np.full(len(column.values), -1)
        slot[seen] = np.arange(len(seen))
        one_hot.append((len(names), slot[column.codes]))
        names.extend(f"{name}={value}" for value in column.values[seen])
    features = np.zeros((len(numeric), len(names)), np.float32)
    features[:, :len(NUMERIC_COLUMNS)] = (numeric - mean) / std
    rows = np.arange(len(numeric))
    for offset, slots in one_hot:
        known = slots >= 0
        features[rows[known], offset + slots[known]] = 1.0
    return features, tuple(names), mean, std


def load_census_income(data_dir: str, group: int = 1, seed: int = 0) -> CensusIncome:
    """Loads, splits and encodes the census data for a task group (cached per process).

    Args:
        data_dir: the data root holding `census-income/` (see `resolve_data_dir`).
        group: 1 (income > 50K, never married) or 2 (education >= college, never married).
        seed: non-negative seed of the 60/20/20 split.

    Returns:
        A `CensusIncome`.

    Example:

    >>> data = load_census_income(resolve_data_dir(), group=1)  # doctest: +SKIP
    >>> data.features["train"].shape, sorted(data.labels["test"])  # doctest: +SKIP
    ((59857, 501), ['income', 'marital'])
    """
    if not is_int(group) or group not in GROUPS:
        raise ValueError(
            f"Received an invalid value for `group`, expected one of {sorted(GROUPS)} (1: income "
            f"and marital status, 2: education and marital status). Received: group={group!r}"
        )
    check_seed(seed)
    return _load(str(census_path(data_dir).resolve()), group, int(seed))


@functools.lru_cache(maxsize=4)
def _load(path: str, group: int, seed: int) -> CensusIncome:
    columns = read_census_columns(path)
    num_rows = len(columns["age"].codes)
    indices = split_indices(num_rows, seed)
    features, names, mean, std = encode_features(columns, group, indices["train"])
    labels = {task: task_labels(columns, task) for task in GROUPS[group]}
    data = CensusIncome(
        group=group,
        features={split: features[rows] for split, rows in indices.items()},
        labels={split: {task: y[rows] for task, y in labels.items()}
                for split, rows in indices.items()},
        indices=indices, feature_names=names, numeric_mean=mean, numeric_std=std)
    for array in (*data.features.values(), *data.indices.values(), mean, std,
                  *(y for split in data.labels.values() for y in split.values())):
        array.flags.writeable = False  # Shared by every caller of the cache.
    return data
