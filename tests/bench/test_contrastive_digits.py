"""Smoke test of bench/contrastive_digits.py: two seeds at toy size, and the summary maths."""

import json
import statistics

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from bench import contrastive_digits
from tf_mtml.data.digits import labelled_subset, load_digits_split

TINY = ("task.data.global_batch_size=32,task.model.filters=16,task.model.projection_units=[8],"
        "task.evaluation.labels_per_class=[1],task.evaluation.finetune_steps=2")


@pytest.mark.slow
def test_two_seeds_report_every_figure_and_paired_differences():
    report = contrastive_digits.run_benchmark(seeds=2, train_steps=2, overrides=TINY)
    json.dumps(report)
    runs, summary = report["runs"], report["summary"]
    assert [run["seed"] for run in runs] == [0, 1]
    figures = {f"{kind}/acc_1_per_class" for kind in
               ("probe", "finetune", "scratch", "random_probe", "pixel_probe")}
    for run in runs:
        assert run["train_steps"] == 2
        assert figures <= set(run["figures"])
        assert all(0.0 <= run["figures"][name] <= 1.0 for name in figures)
    for name in figures:
        values = [run["figures"][name] for run in runs]
        assert summary[name]["mean"] == pytest.approx(statistics.fmean(values))
        assert summary[name]["std"] == pytest.approx(statistics.stdev(values))
    gaps = [run["figures"]["finetune/acc_1_per_class"] - run["figures"]["scratch/acc_1_per_class"]
            for run in runs]
    assert summary["finetune_minus_scratch/acc_1_per_class"]["values"] == pytest.approx(gaps)
    assert "probe_minus_random_probe/acc_1_per_class" in summary
    # The pixel probe involves no network: logistic regression on the raw pixels of seed 1's
    # labelled subset.
    split = load_digits_split(0.3, seed=0)
    ids = labelled_subset(split.train_labels, 1, seed=1)
    probe = LogisticRegression(max_iter=2000).fit(split.train_images[ids].reshape(10, -1),
                                                  split.train_labels[ids])
    expected = np.mean(probe.predict(split.test_images.reshape(len(split.test_images), -1))
                       == split.test_labels)
    assert runs[1]["figures"]["pixel_probe/acc_1_per_class"] == pytest.approx(expected)
