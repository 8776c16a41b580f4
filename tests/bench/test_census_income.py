"""Smoke test of bench/census_income.py: the whole benchmark at toy size on the real data."""

import importlib.util
import json
import pathlib

import numpy as np
import pytest

from tf_mtml.configs.base import ConfigError
from tf_mtml.data import census, resolve_data_dir

_PATH = pathlib.Path(__file__).parents[2] / "bench" / "census_income.py"


def _load_benchmark():
    # bench/ is a folder of scripts, not a package: load the module from its file.
    spec = importlib.util.spec_from_file_location("bench_census_income", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_models_that_cannot_run_fail_before_training():
    bench = _load_benchmark()
    with pytest.raises(ConfigError, match="cannot run.*'bogus'.*Unknown experiment 'bogus_census'"):
        bench.run_benchmark(seeds=[0], models=["mmoe", "bogus"])
    assert bench.task_sets("single_task", 2) == [("education",), ("marital",)]
    assert bench.task_sets("mmoe", 1) == [("income", "marital")]


@pytest.mark.slow
def test_toy_benchmark_report_is_consistent():
    try:
        census.census_path(resolve_data_dir())
    except FileNotFoundError as error:
        pytest.skip(f"No census-income data: {error}")
    bench = _load_benchmark()
    report = bench.run_benchmark(seeds=[0, 1], models=["single_task", "mmoe"], train_steps=2)
    json.dumps(report)  # the script prints it as JSON

    assert report["tasks"] == ["income", "marital"] and report["seeds"] == [0, 1]
    assert report["published"]["mmoe"]["income"] == {"mean": 0.9359, "best": 0.9410}
    single, mmoe = report["models"]["single_task"], report["models"]["mmoe"]
    assert single["train_steps"] == mmoe["train_steps"] == 2
    # Two single-task networks of 32 hidden units, each with its tower, head and the model's
    # two (non-trainable) label statistics.
    width = len(census.load_census_income(resolve_data_dir()).feature_names)
    assert single["params"] == 2 * ((width + 1) * 32 + (32 + 1) * 8 + 8 + 1 + 2)
    for model in (single, mmoe):
        for task in ("income", "marital"):
            stats = model["test_auc"][task]
            assert len(stats["values"]) == 2 and all(0 < v < 1 for v in stats["values"])
            np.testing.assert_allclose(stats["mean"], np.mean(stats["values"]))
            np.testing.assert_allclose(stats["best"], np.max(stats["values"]))
            np.testing.assert_allclose(stats["std"], np.std(stats["values"], ddof=1))
            # The seeds give different initialisations, hence different scores.
            assert stats["values"][0] != stats["values"][1]
