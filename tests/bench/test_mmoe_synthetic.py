"""Smoke test of bench/mmoe_synthetic.py: the whole benchmark at toy size."""

import importlib.util
import json
import pathlib

import numpy as np
import pytest

_PATH = pathlib.Path(__file__).parents[2] / "bench" / "mmoe_synthetic.py"


def _load_benchmark():
    # bench/ is a folder of scripts, not a package: load the module from its file.
    spec = importlib.util.spec_from_file_location("bench_mmoe_synthetic", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_toy_benchmark_report_is_consistent():
    bench = _load_benchmark()
    report = bench.run_benchmark(seeds=[0, 1], correlations=[1.0, 0.5], train_steps=5)
    json.dumps(report)  # the script prints it as JSON

    assert report["train_steps"] == 5
    mmoe, sb = report["models"]["mmoe"], report["models"]["shared_bottom"]
    assert len(mmoe["params"]) == len(sb["params"]) == 1  # one architecture per model
    assert abs(sb["params"][0] / mmoe["params"][0] - 1) < 0.01  # matched budgets
    differences = {}
    for c in ("1.0", "0.5"):
        m, b = mmoe["test_loss"][c], sb["test_loss"][c]
        for stats in (m, b):
            assert len(stats["values"]) == 2 and all(v > 0 for v in stats["values"])
            np.testing.assert_allclose(stats["mean"], np.mean(stats["values"]))
            np.testing.assert_allclose(stats["std"], np.std(stats["values"], ddof=1))
        # The two seeds give different problems and inits, hence different losses.
        assert m["values"][0] != m["values"][1]
        differences[c] = np.subtract(m["values"], b["values"])
        np.testing.assert_allclose(report["mmoe_minus_shared_bottom"][c]["values"],
                                   differences[c])

    finding = report["paper_finding"]
    se = {c: np.std(d, ddof=1) / np.sqrt(2) for c, d in differences.items()}
    not_worse = {c: bool(d.mean() <= 2 * se[c]) for c, d in differences.items()}
    assert finding["mmoe_not_worse"] == not_worse
    growth = np.mean(differences["1.0"] - differences["0.5"])
    np.testing.assert_allclose(finding["advantage_growth"], growth)
    assert finding["holds"] == (all(not_worse.values()) and growth > 0)
