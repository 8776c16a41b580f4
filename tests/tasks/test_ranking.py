"""The ranking task family: temporal schedule, evaluation, ranking score and export."""

import json
import math
import os
import signal

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tf_mtml.configs import experiments
from tf_mtml.data.ranking_synthetic import POSITION, USER_FEATURES, VIDEO_AGE, VIDEO_FEATURES
from tf_mtml.serving.export import read_signature_defs
from tf_mtml.serving.session_loader import serve_in_fresh_process
from tf_mtml.tasks.factory import build_task
from tf_mtml.tasks.ranking import RANKING_SCORE, SERVING_FEATURES, RankingTask, ndcg
from tf_mtml.train.preemption import TrainingPreempted
from tf_mtml.train.run import EVAL_RESULTS_FILE, build_trainer, export_model, run_experiment

TASKS = ("click", "watch_time", "like", "rating")
TINY = ("task.data.num_days=3,task.data.requests_per_day=40,task.data.num_users=30,"
        "task.data.list_size=6,task.data.new_videos_per_day=10,task.data.video_lifetime_days=3,"
        "task.data.global_batch_size=16,task.model.num_experts=2,task.model.expert_units=[8],"
        "task.model.tower_units=[4],task.ndcg_cutoffs=[3,5],trainer.train_steps=12,"
        "trainer.steps_per_loop=2,trainer.checkpoint_interval=4,trainer.validation_interval=4,"
        "trainer.optimizer.learning_rate=0.01")


def _params(extra: str = ""):
    params = experiments.get_experiment("youtube_ranking").override_from_string(
        TINY + ("," + extra if extra else ""))
    params.validate()
    return params


def _numpy_ndcg(relevance, scores, k):
    values = []
    for rel, score in zip(relevance, scores, strict=True):
        discounts = 1 / np.log2(np.arange(2, k + 2))
        dcg = np.sum((2.0 ** rel[np.argsort(-score)][:k] - 1) * discounts)
        ideal = np.sum((2.0 ** np.sort(rel)[::-1][:k] - 1) * discounts)
        values.append(dcg / ideal)
    return float(np.mean(values))


@pytest.fixture(scope="module")
def schedule(tmp_path_factory):
    """One tiny run of the schedule, with the order of training and evaluation days."""
    model_dir = str(tmp_path_factory.mktemp("ranking"))
    params = _params()
    trainer = build_trainer(params, model_dir)
    task = trainer.task
    events = []
    build_inputs, evaluate_model = task.build_inputs, task.evaluate_model

    def record_inputs(training, input_context=None):
        events.append(("train", task.train_day))
        return build_inputs(training, input_context)

    def record_evaluation(model, strategy=None):
        events.append(("eval", task.eval_day))
        return evaluate_model(model, strategy)

    task.build_inputs, task.evaluate_model = record_inputs, record_evaluation
    outputs = task.run_schedule(trainer)
    task.build_inputs, task.evaluate_model = build_inputs, evaluate_model
    return {"params": params, "trainer": trainer, "task": task, "events": events,
            "outputs": outputs, "model_dir": model_dir}


def test_ndcg_matches_a_numpy_reference():
    rng = np.random.default_rng(0)
    relevance, scores = rng.uniform(0, 3, (9, 7)), rng.normal(size=(9, 7))
    results = ndcg(relevance, scores, (1, 3, 7))
    assert set(results) == {"ndcg@1", "ndcg@3", "ndcg@7"}
    for k in (1, 3, 7):
        assert results[f"ndcg@{k}"] == pytest.approx(_numpy_ndcg(relevance, scores, k), rel=1e-5)
    assert ndcg(relevance, relevance, (3,))["ndcg@3"] == pytest.approx(1.0)


def _rows(features):
    return {np.concatenate([features[k][i] for k in SERVING_FEATURES]).tobytes()
            for i in range(len(features[VIDEO_AGE]))}


def test_training_batches_hold_every_impression_of_the_training_day_only():
    task = build_task(_params())
    task.train_day = 1
    seen = set()
    for features, labels in task.build_inputs(True).take(15):  # one epoch: 240 / 16
        assert set(labels) == set(TASKS)
        seen |= _rows({k: v.numpy() for k, v in features.items()})
    assert seen == _rows(task.day(1).impressions()[0])
    assert not seen & (_rows(task.day(0).impressions()[0]) | _rows(task.day(2).impressions()[0]))
    with pytest.raises(ValueError, match="evaluate_model"):
        task.build_inputs(False)
    with pytest.raises(ValueError, match=r"day=4, expected a day in \[0, 3\]"):
        task.day(4)
    with pytest.raises(ValueError, match=r"train_day=3, expected a training day in \[0, 2\]"):
        task.train_day = 3


@pytest.mark.slow
def test_schedule_trains_day_t_then_evaluates_day_t_plus_1(schedule):
    trainer, task = schedule["trainer"], schedule["task"]
    assert schedule["events"] == [("train", 0), ("eval", 1), ("train", 1), ("eval", 2),
                                  ("train", 2), ("eval", 3)]
    assert trainer.step == 12 and trainer.train_tracing_count == 1
    assert (task.train_day, task.eval_day) == (2, 3)
    results = schedule["outputs"]["eval"]
    metrics = {"loss", "ndcg@3", "ndcg@5", "click/auc", "like/auc", "watch_time/mse",
               "rating/mse", *(f"{t}/loss" for t in TASKS)}
    assert set(results) == {f"day_{d}/{m}" for d in (1, 2, 3) for m in metrics}
    assert all(math.isfinite(v) for v in results.values())
    with open(os.path.join(schedule["model_dir"], EVAL_RESULTS_FILE)) as f:
        assert json.load(f) == {"step": 12, **results}


@pytest.mark.slow
def test_a_restarted_schedule_skips_finished_days_and_keeps_their_results(schedule):
    trainer = build_trainer(schedule["params"], schedule["model_dir"])
    task = trainer.task
    task.build_inputs = lambda *args: pytest.fail("a finished day was trained again")
    outputs = task.run_schedule(trainer)
    assert trainer.step == 12
    assert outputs["eval"] == schedule["outputs"]["eval"]
    with pytest.raises(ValueError, match="train_steps=13` must be a positive multiple of"):
        task.steps_per_day(13)


def test_a_schedule_preempted_inside_a_day_resumes_to_the_unbroken_weights(schedule, tmp_path):
    # 3 training days of 4 steps: step 6 is inside day 1 (steps 5-8), so the resumed run must
    # continue day 1's stream from its checkpointed position instead of starting it over.
    trainer = build_trainer(schedule["params"], str(tmp_path))
    assert trainer.task.steps_per_day(12) == 4
    trainer.task.after_train_loop = lambda logs: (
        trainer.preemption.request() if trainer.step == 6 else None)
    with pytest.raises(TrainingPreempted, match="step 6"):
        trainer.task.run_schedule(trainer, evaluate=False)
    resumed = build_trainer(schedule["params"], str(tmp_path))
    resumed.task.run_schedule(resumed, evaluate=False)
    assert resumed.step == 12
    for a, b in zip(resumed.model.weights, schedule["trainer"].model.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.path)


@pytest.mark.slow
def test_evaluation_matches_an_independent_computation(schedule):
    task, model = schedule["task"], schedule["trainer"].model
    results = schedule["outputs"]["eval"]
    day = task.day(3)
    features, labels = day.impressions()
    raw = {k: v.numpy() for k, v in model(features).items()}
    predictions = {k: keras.ops.convert_to_numpy(v) for k, v in model.postprocess(raw).items()}
    logits = raw["click"][:, 0].astype(np.float64)
    bce = np.mean(np.logaddexp(0, logits) - labels["click"] * logits)
    assert results["day_3/click/loss"] == pytest.approx(bce, rel=1e-4)
    for name in ("watch_time", "rating"):
        known = np.isfinite(labels[name])
        mse = np.mean((labels[name][known] - predictions[name][known]) ** 2)
        assert results[f"day_3/{name}/mse"] == pytest.approx(mse, rel=1e-4)
    for name in ("click", "like"):
        known = np.isfinite(labels[name])
        exact = roc_auc_score(labels[name][known], predictions[name][known])
        assert results[f"day_3/{name}/auc"] == pytest.approx(exact, abs=1e-6)
    served = task.serve_fn(model)({k: features[k] for k in SERVING_FEATURES})
    scores = served[RANKING_SCORE].numpy().reshape(day.video_ids.shape)
    utility = sum(w * day.expected[n] for n, w in
                  {"click": 1.0, "watch_time": 0.1, "like": 1.0, "rating": 0.2}.items())
    for k in (3, 5):
        assert results[f"day_3/ndcg@{k}"] == pytest.approx(_numpy_ndcg(utility, scores, k),
                                                           rel=1e-5)


@pytest.mark.slow
def test_ranking_score_is_the_weighted_combination_at_position_zero(schedule):
    task, model = schedule["task"], schedule["trainer"].model
    features, _ = task.day(1).impressions()
    served = {k: v.numpy() for k, v in
              task.serve_fn(model)({k: features[k] for k in SERVING_FEATURES}).items()}
    assert set(served) == {*TASKS, RANKING_SCORE}
    combination = (served["click"] + 0.1 * served["watch_time"] + served["like"]
                   + 0.2 * served["rating"])
    np.testing.assert_allclose(served[RANKING_SCORE], combination, rtol=1e-6)
    at = {}
    for position in (0, 3):
        inputs = {**features, POSITION: np.full_like(features[POSITION], position)}
        at[position] = {k: v.numpy() for k, v in model(inputs).items()}
    np.testing.assert_allclose(served["click"], 1 / (1 + np.exp(-at[0]["click"][:, 0])),
                               rtol=1e-5)
    tower = model.network.get_layer("position_tower").embeddings.numpy()[:, 0]
    assert tower[3] != tower[0]  # trained
    np.testing.assert_allclose(at[3]["click"] - at[0]["click"], tower[3] - tower[0], atol=1e-5)
    for name in ("watch_time", "like", "rating"):
        np.testing.assert_array_equal(at[3][name], at[0][name])


@pytest.mark.slow
def test_export_serves_the_tasks_and_the_ranking_score_in_a_fresh_process(schedule, tmp_path):
    task, trainer = schedule["task"], schedule["trainer"]
    export_dir = export_model(trainer, str(tmp_path))
    signature = read_signature_defs(export_dir)["serving_default"]
    assert set(signature.inputs) == {USER_FEATURES, VIDEO_FEATURES, VIDEO_AGE}
    assert set(signature.outputs) == {*TASKS, RANKING_SCORE}
    features, _ = task.day(2).impressions()
    inputs = {k: features[k][:10] for k in SERVING_FEATURES}
    served = serve_in_fresh_process(export_dir, inputs)
    expected = task.serve_fn(trainer.model)(inputs)
    for name in (*TASKS, RANKING_SCORE):
        assert served[name].shape == (10,)
        np.testing.assert_allclose(served[name], expected[name].numpy(), rtol=1e-5, atol=1e-6)


def test_without_position_bias_tasks_the_network_has_no_shallow_tower():
    task = RankingTask(_params("task.model.position_bias_tasks=[]").task)
    network = task.build_network()
    assert "position_tower" not in [layer.name for layer in network.layers]
    features, _ = task.day(0).impressions()
    moved = {**features, POSITION: np.full_like(features[POSITION], 5)}
    for name, value in network(features).items():
        np.testing.assert_array_equal(value.numpy(), network(moved)[name].numpy())


def test_network_outputs_are_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    task = RankingTask(_params().task)
    features, _ = task.day(0).impressions()
    outputs = task.build_network()(features)
    assert {k: v.dtype.name for k, v in outputs.items()} == {t: "float32" for t in TASKS}


def test_sigterm_during_a_schedule_evaluation_checkpoints_after_the_next_loop(tmp_path,
                                                                              monkeypatch):
    # Day 0 trains steps 1-4, then evaluates on day 1: the signal arrives there, outside any
    # training loop, and is answered after the first loop of day 1 (step 6).
    evaluate_model = RankingTask.evaluate_model

    def signalled_evaluation(self, model, strategy=None):
        os.kill(os.getpid(), signal.SIGTERM)
        return evaluate_model(self, model, strategy)

    monkeypatch.setattr(RankingTask, "evaluate_model", signalled_evaluation)
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingPreempted, match="step 6") as info:
        run_experiment(_params(), "train_and_eval", str(tmp_path))
    assert info.value.checkpoint.endswith("ckpt-6")
    assert signal.getsignal(signal.SIGTERM) is previous
    assert json.load(open(tmp_path / EVAL_RESULTS_FILE))["step"] == 4  # day 0's evaluation
