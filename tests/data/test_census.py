"""Tests for tf_mtml.data.census, on a tiny written file and on the real data when present."""

import csv
import gzip

import numpy as np
import pytest

from tf_mtml.data import census, load_census_income, resolve_data_dir

NUMERIC = list(census.NUMERIC_COLUMNS)


def _row(i, age, sex, education, marital, income, weeks=52):
    """One 42-column row: every column "x<i % 2>" except the ones named here."""
    values = {name: f"x{i % 2}" for name in census.COLUMNS}
    values.update({name: str(i) for name in NUMERIC})
    values.update({"age": str(age), "sex": sex, "education": education,
                   "marital stat": marital, "income": income, "instance weight": "1234.5",
                   "weeks worked in year": str(weeks)})
    return [values[name] for name in census.COLUMNS]


def _write(tmp_path, rows):
    folder = tmp_path / "census-income"
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / census.FILE_NAME, "wt", newline="") as f:
        # The UCI file puts a space after every comma.
        f.writelines(", ".join(row) + "\n" for row in rows)
    return str(tmp_path)


TINY = [
    _row(0, 30, "Female", "High school graduate", "Never married", "- 50000."),
    _row(1, 40, "Male", "Bachelors degree(BA AB BS)", "Divorced", "50000+."),
    _row(2, 50, "Female", "Some college but no degree", "Never married", "- 50000."),
    _row(3, 60, "Male", "Children", "Widowed", "- 50000."),
    _row(4, 70, "Female", "Doctorate degree(PhD EdD)", "Never married", "50000+."),
    _row(5, 80, "Male", "10th grade", "Divorced", "- 50000."),
    _row(6, 90, "Female", "Masters degree(MA MS MEng MEd MSW MBA)", "Never married", "- 50000."),
    _row(7, 20, "Male", "9th grade", "Divorced", "- 50000."),
    _row(8, 10, "Female", "Children", "Never married", "- 50000."),
    _row(9, 99, "Other", "Children", "Widowed", "50000+.", weeks=7),
]


def test_split_is_60_20_20_disjoint_and_deterministic():
    splits = census.split_indices(census.NUM_ROWS, seed=3)
    assert [len(splits[s]) for s in census.SPLITS] == [59857, 19952, 19953]
    everything = np.concatenate(list(splits.values()))
    np.testing.assert_array_equal(np.sort(everything), np.arange(census.NUM_ROWS))
    again = census.split_indices(census.NUM_ROWS, seed=3)
    for split in census.SPLITS:
        np.testing.assert_array_equal(splits[split], again[split])
    other = census.split_indices(census.NUM_ROWS, seed=4)
    assert not np.array_equal(splits["train"], other["train"])


def test_tiny_file_labels_and_encoding(tmp_path):
    data = load_census_income(_write(tmp_path, TINY), group=1, seed=0)
    indices = data.indices
    assert [len(indices[s]) for s in census.SPLITS] == [6, 2, 2]
    income = np.array([r[census.COLUMNS.index("income")] == "50000+." for r in TINY])
    never = np.array([r[census.COLUMNS.index("marital stat")] == "Never married" for r in TINY])
    for split, rows in indices.items():
        np.testing.assert_array_equal(data.labels[split]["income"], income[rows])
        np.testing.assert_array_equal(data.labels[split]["marital"], never[rows])
    names = data.feature_names
    assert names[:len(NUMERIC)] == tuple(NUMERIC)
    assert not any(n.startswith(("income=", "marital stat=", "instance weight")) for n in names)
    # Statistics come from the six training rows only (population standard deviation).
    train = indices["train"]
    ages = np.array([float(r[0]) for r in TINY])
    np.testing.assert_allclose(data.numeric_mean[0], ages[train].mean())
    np.testing.assert_allclose(data.numeric_std[0], ages[train].std())
    assert data.numeric_mean[0] != ages.mean()
    for split, rows in indices.items():
        np.testing.assert_allclose(data.features[split][:, 0],
                                   (ages[rows] - ages[train].mean()) / ages[train].std(),
                                   rtol=1e-6)
    # One-hot "sex": the vocabulary is the training rows' values; others encode as zeros.
    sex_names = [n for n in names if n.startswith("sex=")]
    train_sexes = sorted({TINY[i][census.COLUMNS.index("sex")] for i in train})
    assert sex_names == [f"sex={v}" for v in train_sexes]
    columns = [names.index(n) for n in sex_names]
    for split, rows in indices.items():
        for row, features in zip(rows, data.features[split], strict=True):
            sex = TINY[row][census.COLUMNS.index("sex")]
            expected = [float(sex == v) for v in train_sexes]
            np.testing.assert_array_equal(features[columns], expected)


def test_group_2_labels_and_features(tmp_path):
    data = load_census_income(_write(tmp_path, TINY), group=2, seed=1)
    assert sorted(data.labels["train"]) == ["education", "marital"]
    # Independent definition: "college" or "degree" in the UCI category name.
    college = np.array(["college" in r[4].lower() or "degree" in r[4] for r in TINY])
    for split, rows in data.indices.items():
        np.testing.assert_array_equal(data.labels[split]["education"], college[rows])
    assert not any(n.startswith(("education=", "marital stat=")) for n in data.feature_names)
    assert any(n.startswith("income=") for n in data.feature_names)


def test_constant_numeric_column_encodes_as_zeros(tmp_path):
    rows = [_row(i, 33, "Male", "Children", "Widowed", "- 50000.") for i in range(5)]
    data = load_census_income(_write(tmp_path, rows), group=1)
    assert data.numeric_std[0] == 1.0
    assert np.all(data.features["train"][:, 0] == 0.0)


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*download_census_income"):
        load_census_income(str(tmp_path / "missing"))
    data_dir = _write(tmp_path, TINY)
    with pytest.raises(ValueError, match=r"expected one of \[1, 2\].*Received: group=3"):
        load_census_income(data_dir, group=3)
    with pytest.raises(ValueError, match="Received: group=True"):
        load_census_income(data_dir, group=True)
    with pytest.raises(ValueError, match="Received: seed=-1"):
        load_census_income(data_dir, seed=-1)
    short = _write(tmp_path / "short", [*TINY[:3], TINY[3][:40]])
    with pytest.raises(ValueError, match="line 4: expected 42 comma-separated columns, found 40"):
        load_census_income(short)
    empty = _write(tmp_path / "empty", [])
    with pytest.raises(ValueError, match="holds no rows"):
        load_census_income(empty)


def test_download_writes_the_file_once(tmp_path, monkeypatch):
    """Exercises the download code with a file:// URL: no network."""
    upstream = tmp_path / "upstream.gz"
    upstream.write_bytes(b"census bytes")
    monkeypatch.setattr(census, "CENSUS_URL", upstream.as_uri())
    path = census.download_census_income(str(tmp_path / "data"))
    assert path == str(tmp_path / "data" / "census-income" / census.FILE_NAME)
    assert open(path, "rb").read() == b"census bytes"
    upstream.write_bytes(b"changed")
    census.download_census_income(str(tmp_path / "data"))
    assert open(path, "rb").read() == b"census bytes"


@pytest.fixture(scope="module")
def real_data_dir():
    try:
        data_dir = resolve_data_dir()
    except FileNotFoundError as error:
        pytest.skip(f"No real data root: {error}")
    try:
        census.census_path(data_dir)
    except FileNotFoundError as error:
        pytest.skip(f"No census-income data: {error}")
    return data_dir


@pytest.fixture(scope="module")
def raw_rows(real_data_dir):
    """The file parsed with plain Python csv, independently of the loader."""
    with gzip.open(census.census_path(real_data_dir), "rt", newline="") as f:
        return [[v.strip() for v in row] for row in csv.reader(f)]


def test_real_file_rows_columns_and_label_rates(real_data_dir, raw_rows):
    assert len(raw_rows) == 99762 and {len(r) for r in raw_rows} == {42}
    columns = census.read_census_columns(census.census_path(real_data_dir))
    assert tuple(columns) == census.COLUMNS
    assert set(columns["sex"].values) == {"Female", "Male"}
    np.testing.assert_array_equal(columns["age"].numeric()[:3], [float(r[0]) for r in raw_rows[:3]])
    data = load_census_income(real_data_dir, group=1)
    assert sum(len(rows) for rows in data.indices.values()) == 99762
    expected = {"income": [r[41] == "50000+." for r in raw_rows],
                "marital": [r[7] == "Never married" for r in raw_rows]}
    group2 = load_census_income(real_data_dir, group=2)
    expected["education"] = ["college" in r[4].lower() or "degree" in r[4] for r in raw_rows]
    for loaded in (data, group2):
        for task in loaded.labels["train"]:
            total = sum(float(loaded.labels[s][task].sum()) for s in census.SPLITS)
            assert total == sum(expected[task])
            for split, rows in loaded.indices.items():
                np.testing.assert_array_equal(loaded.labels[split][task],
                                              np.asarray(expected[task])[rows])
    assert sum(expected["income"]) == 6186 and sum(expected["marital"]) == 43143


def test_real_features_standardised_on_train_and_one_hot(real_data_dir, raw_rows):
    data = load_census_income(real_data_dir, group=1)
    train = data.indices["train"]
    numeric = np.array([[float(r[census.COLUMNS.index(c)]) for c in NUMERIC] for r in raw_rows])
    np.testing.assert_allclose(data.numeric_mean, numeric[train].mean(axis=0))
    np.testing.assert_allclose(data.numeric_std, numeric[train].std(axis=0))
    np.testing.assert_allclose(data.features["train"][:, :len(NUMERIC)].mean(axis=0), 0,
                               atol=1e-4)
    # Every nominal column but the dropped and label ones (42 - 7 - 3 = 32) is one-hot.
    one_hot = data.features["train"][:, len(NUMERIC):]
    assert set(np.unique(one_hot)) == {0.0, 1.0}
    np.testing.assert_array_equal(one_hot.sum(axis=1), 32)
    assert data.features["test"].shape == (19953, data.num_features)
    assert not data.features["train"].flags.writeable
