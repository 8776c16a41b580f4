"""Smoke test of bench/contrastive_omniglot.py at toy size (skips without Omniglot)."""

import json
import os

import pytest

from bench import contrastive_omniglot
from tf_mtml.data.data_dir import resolve_data_dir

TINY = ("task.data.global_batch_size=16,task.data.classes_per_batch=8,task.model.filters=8,"
        "task.model.projection_units=[8],task.evaluation.episodes=4,"
        "task.evaluation.episode_batch_size=2,task.evaluation.ood_max_references=64")


@pytest.mark.slow
def test_one_seed_reports_supcon_and_the_floors():
    try:
        root = resolve_data_dir()
    except FileNotFoundError as e:
        pytest.skip(f"Omniglot data not available: {e}")
    if not os.path.isdir(os.path.join(root, "omniglot")):
        pytest.skip(f"Omniglot data not available under {root}/omniglot")
    report = contrastive_omniglot.run_benchmark(1, train_steps=2, overrides=TINY)
    json.dumps(report)
    (run,) = report["runs"]
    assert run["train_steps"] == 2
    name = "fewshot/acc_5way_1shot"
    for scores in (run["supcon"], *run["floors"].values()):
        assert 0.0 <= scores[name] <= 1.0 and scores[f"{name}_ci95"] > 0.0
    assert set(run["floors"]) == {"random_encoder", "pixels"}
