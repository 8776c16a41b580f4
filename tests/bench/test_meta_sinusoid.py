"""Tests of bench/meta_sinusoid.py: adapted MSE against numpy, the report at toy size."""

import json
import math

import numpy as np
import pytest

from bench import meta_sinusoid
from tf_mtml.meta.base import QUERY_X, QUERY_Y, SUPPORT_X, SUPPORT_Y
from tf_mtml.meta.metrics import Z_95
from tf_mtml.tasks.meta import MetaLearningTask


def _forward(params, x):
    w0, b0, w1, b1, w2, b2 = params
    h0 = x @ w0 + b0
    h1 = np.maximum(h0, 0) @ w1 + b1
    return h0, h1, np.maximum(h1, 0) @ w2 + b2


def _sgd_step(params, x, y, lr):
    """One SGD step on the mean squared error of the 1-40-40-1 ReLU MLP, by hand."""
    w0, b0, w1, b1, w2, b2 = params
    h0, h1, prediction = _forward(params, x)
    d_out = 2 * (prediction - y) / y.size
    d_h1 = (d_out @ w2.T) * (h1 > 0)
    d_h0 = (d_h1 @ w1.T) * (h0 > 0)
    grads = [x.T @ d_h0, d_h0.sum(0), np.maximum(h0, 0).T @ d_h1, d_h1.sum(0),
             np.maximum(h1, 0).T @ d_out, d_out.sum(0)]
    return [p - lr * g for p, g in zip(params, grads, strict=True)]


def test_adapted_mse_matches_sgd_by_hand():
    config = meta_sinusoid.experiment_config(steps=1, eval_tasks=4, eval_shots=5,
                                             eval_queries=7)
    task = MetaLearningTask(config.task, seed=0)
    model = task.build_model()
    dataset = task.build_inputs(training=False)
    mse = meta_sinusoid.adapted_mse(model, dataset, eval_steps=[0, 2])

    initial = [np.asarray(w, np.float64) for w in model.learner.get_weights()]
    episode = {k: np.asarray(v, np.float64) for k, v in next(iter(dataset)).items()}
    assert episode[SUPPORT_X].shape == (4, 5, 1) and episode[QUERY_X].shape == (4, 7, 1)
    for steps in (0, 2):
        expected = []
        for i in range(4):
            params = initial
            for _ in range(steps):
                params = _sgd_step(params, episode[SUPPORT_X][i], episode[SUPPORT_Y][i], 0.01)
            error = _forward(params, episode[QUERY_X][i])[2] - episode[QUERY_Y][i]
            expected.append(np.mean(error**2))
        np.testing.assert_allclose(mse[steps], expected, rtol=1e-4)
    assert not np.allclose(mse[0], mse[2])  # the steps adapt


def test_summarize_is_the_mean_with_a_normal_95_interval():
    values = np.array([0.5, 1.0, 2.5, 4.0])
    summary = meta_sinusoid.summarize(values)
    assert summary["tasks"] == 4
    np.testing.assert_allclose(summary["mse"], 2.0, rtol=1e-6)
    np.testing.assert_allclose(summary["ci95"], Z_95 * np.std(values, ddof=1) / 2, rtol=1e-6)


@pytest.mark.slow
def test_toy_run_reports_every_model_and_step():
    report = meta_sinusoid.run_benchmark(steps=3, eval_tasks=6, eval_steps=[5, 0, 1],
                                         eval_queries=4)
    json.dumps(report)
    assert report["config"]["eval_steps"] == [0, 1, 5]
    for name in ("maml", "pretrained"):
        run = report[name]
        assert run["train_steps"] == 3 and math.isfinite(run["final_train_loss"])
        np.testing.assert_allclose(run["steps_per_s"], 3 / run["train_wall_s"])
        assert list(run["mse"]) == ["0", "1", "5"]
        for figures in run["mse"].values():
            assert figures["tasks"] == 6 and figures["mse"] > 0 and figures["ci95"] > 0
    assert report["pretrained"]["inner_lr"] == 0.01
    for steps, published in meta_sinusoid.PUBLISHED.items():
        figures = report["maml"]["mse"].get(str(steps))
        if figures is not None:
            assert figures["published"] == published
            np.testing.assert_allclose(figures["gap"], figures["mse"] - published)
    assert "published" not in report["maml"]["mse"]["0"]
    # Both models see the same tasks: the mean paired difference is the difference of means.
    for steps, difference in report["maml_minus_pretrained"].items():
        np.testing.assert_allclose(
            difference["mse"],
            report["maml"]["mse"][steps]["mse"] - report["pretrained"]["mse"][steps]["mse"],
            rtol=1e-4, atol=1e-6)
    assert report["machine"]["cpu_count"] >= 1


def test_baseline_trains_without_inner_steps():
    config = meta_sinusoid.experiment_config(10, 6, 5, 4, pretrained=True, step_size=0.02)
    assert config.task.model.inner_steps == 0 and config.task.model.inner_lr == 0.02
    assert config.task.data.eval_num_shots == 5 and config.task.data.eval_meta_batch_size == 6


@pytest.mark.parametrize("name, value, expected", [
    ("steps", 0, "positive integer"),
    ("eval_tasks", True, "positive integer"),
    ("eval_shots", 1.5, "positive integer"),
    ("eval_queries", -1, "positive integer"),
    ("eval_steps", [], "distinct non-negative integers"),
    ("eval_steps", [1, 1], "distinct non-negative integers"),
    ("eval_steps", [-1], "distinct non-negative integers"),
    ("pretrained_step_size", 0.0, "positive number"),
])
def test_bad_arguments_are_rejected_before_any_work(name, value, expected):
    with pytest.raises(ValueError, match=rf"`{name}`, expected .*{expected}.*Received: {name}="):
        meta_sinusoid.run_benchmark(**{name: value})
