"""Tests of bench/meta_omniglot.py: cached ProtoNet evaluation, budgeted runs at toy size."""

import json
import math
import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from bench import meta_omniglot
from tf_mtml.meta import MAML, conv4_classifier
from tf_mtml.meta.base import QUERY_X, SUPPORT_X, SUPPORT_Y

# Toy sizes: 8-filter Conv-4, 5-way training episodes, 2 episodes per evaluation batch.
TINY = ("task.model.filters=8,task.data.num_ways=5,task.data.num_queries=1,"
        "task.data.meta_batch_size=2,task.data.eval_meta_batch_size=2")


@pytest.fixture(scope="module")
def data_dir() -> str:
    root = os.environ.get("TF_MTML_DATA_DIR") or str(
        pathlib.Path(__file__).resolve().parents[3] / "shared" / "data")
    if not (pathlib.Path(root) / "omniglot").is_dir():
        pytest.skip(f"Omniglot is not in {root}/omniglot (set TF_MTML_DATA_DIR to the folder "
                    "holding omniglot/ to run this test).")
    return root


def test_index_images_name_the_image_and_its_rotation():
    images = meta_omniglot.index_images(3)
    assert images.shape == (3, 2, 2, 1) and images.dtype == np.float32
    for m in range(3):
        top_left = {int(tf.image.rot90(images[m], k)[0, 0, 0]) for k in range(4)}
        assert top_left == {4 * m, 4 * m + 1, 4 * m + 2, 4 * m + 3}


def _set_batch_norm_statistics(model, seed: int) -> None:
    # Off their initial values, so that batch statistics would give other embeddings.
    for variable in model.non_trainable_variables:
        low, high = (0.5, 1.5) if "variance" in variable.path else (-0.1, 0.1)
        variable.assign(tf.random.uniform(variable.shape, low, high, seed=seed))


@pytest.mark.slow
def test_cached_protonet_evaluation_equals_the_network_on_the_same_episodes(data_dir):
    config = meta_omniglot.experiment_config("protonet", data_dir, steps_per_loop=2,
                                             params_override=TINY)
    task = meta_omniglot.evaluation_task(config, "val", num_ways=20, num_episodes=4)
    model = task.build_model()
    _set_batch_norm_statistics(model, seed=0)
    data = task.classes("val")
    table = meta_omniglot.embedding_table(lambda x: model.embed(x, training=False),
                                          data.examples)
    assert table.shape == (4 * len(data.examples), 8) and np.std(table, axis=0).min() > 0
    cached = meta_omniglot.PrototypicalNetwork(meta_omniglot.EmbeddingLookup(table),
                                               distance=model.distance)
    indexed = meta_omniglot.IndexedEpisodesTask(task.config, data, task.seed)
    pairs = zip(task.build_inputs(training=False), indexed.build_inputs(training=False),
                strict=True)
    for episode, index_episode in pairs:
        assert index_episode[QUERY_X].shape[2:] == (2, 2, 1)
        np.testing.assert_array_equal(index_episode["query_y"], episode["query_y"])
        # The index episode picks the images (and rotations) of the real one.
        support = tf.cast(index_episode[SUPPORT_X][:, :, 0, 0, 0], tf.int32)
        np.testing.assert_array_equal(
            tf.image.rot90(data.examples[support[0, 0].numpy() // 4],
                           _turns(support[0, 0].numpy() % 4)),
            episode[SUPPORT_X][0, 0])
        np.testing.assert_allclose(cached(index_episode, training=False),
                                   model(episode, training=False), rtol=1e-4, atol=1e-3)

    # The evaluator follows the model from one call to the next, as the curve needs.
    evaluate = meta_omniglot.Evaluator(model, config)
    direct, episodes = meta_omniglot.episode_scorer(model), meta_omniglot.evaluation_task(
        config, "val", 5, 4).build_inputs(training=False)
    results = []
    for seed in (1, 2):
        _set_batch_norm_statistics(model, seed)
        expected = meta_omniglot.mean_accuracy(direct, episodes)
        results.append(evaluate("val", (5,), 4)[5])
        assert results[-1] == pytest.approx(expected, abs=1e-6)
    assert results[0] != results[1]


def _turns(slot: int) -> int:
    template = meta_omniglot.index_images(1)[0]
    return next(k for k in range(4) if int(tf.image.rot90(template, k)[0, 0, 0]) == slot)


def test_maml_predictions_adapt_each_episode_as_the_vectorized_call():
    learner = conv4_classifier(5, input_shape=(16, 16, 1), filters=8)
    model = MAML(learner, inner_lr=0.4, inner_steps=1, eval_inner_steps=3)
    rng = np.random.default_rng(0)
    episode = {SUPPORT_X: rng.uniform(size=(2, 5, 16, 16, 1)).astype("float32"),
               SUPPORT_Y: np.tile(np.arange(5, dtype="int32"), (2, 1)),
               QUERY_X: rng.uniform(size=(2, 5, 16, 16, 1)).astype("float32")}
    predictions = tf.function(lambda e: meta_omniglot.query_predictions(model, e))(episode)
    np.testing.assert_allclose(predictions, model(episode, training=False), rtol=1e-4,
                               atol=1e-4)
    unadapted = learner(episode[QUERY_X][0], training=True)
    assert not np.allclose(predictions[0], unadapted, atol=1e-3)  # 3 steps were taken


class _FakeTrainer:
    """A `Trainer` stand-in whose loops of 5 steps each take `loop_s` on a fake clock."""

    def __init__(self, clock: dict, loop_s: float):
        self.clock, self.loop_s, self.step = clock, loop_s, 0

    def train(self, train_steps: int, eval_fn):
        while self.step < train_steps:
            self.clock["now"] += self.loop_s
            self.step = min(self.step + 5, train_steps)
            eval_fn()

    def train_loop_end(self) -> dict:
        return {"loss": 1.0 / self.step, "accuracy": 0.5}


# Loops end every 30 s of training; a point follows the loop that reaches each full minute.
@pytest.mark.parametrize("train_steps, minutes, steps, at_minutes, stopped_by", [
    (1000, 2.0, [0, 10, 20], [0.0, 1.0, 2.0], "budget"),
    (12, 10.0, [0, 10, 12], [0.0, 1.0, 1.5], "train_steps"),  # the last step comes first
])
def test_budget_and_curve_count_training_time_only(monkeypatch, train_steps, minutes, steps,
                                                   at_minutes, stopped_by):
    clock = {"now": 0.0}
    monkeypatch.setattr(meta_omniglot.time, "perf_counter", lambda: clock["now"])

    def validate() -> dict:
        clock["now"] += 7.0  # evaluation time, not training time
        return {"accuracy": 0.25, "ci95": 0.01, "episodes": 4}

    run = meta_omniglot.train_with_budget(_FakeTrainer(clock, loop_s=30.0), train_steps,
                                          minutes, eval_every_minutes=1.0, validate=validate)
    assert [p["step"] for p in run["curve"]] == steps
    assert [p["train_minutes"] for p in run["curve"]] == at_minutes
    assert run["stopped_by"] == stopped_by and run["steps"] == steps[-1]
    assert run["train_wall_s"] == 30.0 * math.ceil(steps[-1] / 5)
    assert run["curve_eval_wall_s"] == 7.0 * len(steps)
    assert run["steps_per_s"] == steps[-1] / run["train_wall_s"]
    assert run["curve"][0]["train_loss"] is None
    assert run["curve"][-1]["train_loss"] == 1.0 / steps[-1]


def _check_report(report: dict, ways: list[int]) -> None:
    json.dumps(report)
    training, curve = report["training"], report["curve"]
    assert training["steps"] >= 2 and training["stopped_by"] == "budget"
    np.testing.assert_allclose(training["steps_per_s"],
                               training["steps"] / training["train_wall_s"])
    assert curve[0]["step"] == 0 and curve[0]["train_loss"] is None
    assert curve[-1]["step"] == training["steps"]
    assert [p["step"] for p in curve] == sorted({p["step"] for p in curve})
    for point in curve:
        assert 0 <= point["val_accuracy"] <= 1 and point["val_ci95"] > 0
        assert point["val_episodes"] == 4
    assert math.isfinite(curve[-1]["train_loss"]) and 0 <= curve[-1]["train_accuracy"] <= 1
    assert list(report["meta_test"]) == [f"{n}-way 1-shot" for n in ways]
    for n in ways:
        result = report["meta_test"][f"{n}-way 1-shot"]
        assert result["episodes"] == 6
        assert 0 <= result["accuracy"] <= 1 and result["ci95"] > 0
        assert result["published"] == meta_omniglot.PUBLISHED[report["algorithm"]][n]
        np.testing.assert_allclose(result["gap"], result["published"] - result["accuracy"])
    wall = report["wall_s"]
    assert wall["total"] >= wall["train"] + wall["curve_eval"] + wall["meta_test"]
    assert report["machine"]["cpu_count"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize("algorithm, ways", [("protonet", [5, 20]), ("maml", [5])])
def test_toy_run_reports_curve_and_meta_test(data_dir, algorithm, ways):
    # MAML's code path, first order and 1 test step: traced in half the time of the default.
    maml = ",task.model.algorithm=fomaml,task.model.eval_inner_steps=1,task.data.eval_num_queries=2"
    # A budget under a millisecond stops after the first loop of 2 steps: one curve point.
    report = meta_omniglot.run_benchmark(
        algorithm, minutes=1e-5, eval_every_minutes=5e-6, eval_episodes=6, curve_episodes=4,
        data_dir=data_dir, steps_per_loop=2,
        params_override=TINY + (maml if algorithm == "maml" else ""))
    _check_report(report, ways)
    assert [p["step"] for p in report["curve"]] == [0, 2]


@pytest.mark.parametrize("name, value, expected", [
    ("algorithm", "reptile", "one of"),
    ("minutes", 0, "positive number"),
    ("eval_every_minutes", float("nan"), "positive number"),
    ("eval_episodes", 0, "positive integer"),
    ("curve_episodes", 2.5, "positive integer"),
    ("steps_per_loop", True, "positive integer"),
])
def test_bad_arguments_are_rejected_before_any_work(name, value, expected):
    arguments = {"algorithm": "protonet", "minutes": 1.0, "eval_every_minutes": 1.0,
                 "data_dir": "/nonexistent", name: value}
    with pytest.raises(ValueError, match=rf"`{name}`, expected .*{expected}.*Received: {name}="):
        meta_omniglot.run_benchmark(**arguments)
