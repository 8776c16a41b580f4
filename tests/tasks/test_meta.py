"""The meta-learning task family end to end: train, evaluate with a CI, export, serve."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.configs import experiments
from tf_mtml.data.data_dir import resolve_data_dir
from tf_mtml.serving.session_loader import serve_in_fresh_process
from tf_mtml.train.run import EVAL_RESULTS_FILE, build_trainer, export_model, run_experiment

TINY_LOOP = ("trainer.train_steps=4,trainer.steps_per_loop=2,trainer.checkpoint_interval=2,"
             "trainer.validation_interval=2")


def _data_root():
    try:
        return resolve_data_dir()
    except FileNotFoundError as e:
        pytest.skip(f"Omniglot not available: {e}")


def _sinusoid(algorithm, extra=""):
    return experiments.get_experiment(f"{algorithm}_sinusoid").override_from_string(
        f"{TINY_LOOP},task.data.meta_batch_size=4,task.data.eval_episodes=40,"
        f"task.data.eval_meta_batch_size=20,task.model.hidden_units=[8]{extra}")


def _omniglot(name, extra=""):
    root = _data_root()
    return experiments.get_experiment(name).override_from_string(
        f"{TINY_LOOP},task.data.data_dir={root},task.data.train_split=val,"
        "task.data.eval_split=test,task.data.eval_episodes=20,task.data.eval_meta_batch_size=10,"
        f"task.model.filters=4{extra}")


@pytest.mark.slow
def test_maml_sinusoid_trains_once_traced_and_reports_mse_with_interval(tmp_path):
    params = _sinusoid("maml")
    outputs = run_experiment(params, "train_and_eval", str(tmp_path))
    with open(os.path.join(tmp_path, EVAL_RESULTS_FILE)) as f:
        results = json.load(f)
    assert results["step"] == 4
    assert results["mse"] == pytest.approx(outputs["eval"]["mse"])
    assert results["mse"] > 0 and results["mse_ci95"] > 0
    trainer = build_trainer(params, str(tmp_path))
    assert trainer.restore() == 4
    trainer.train(8)
    assert trainer.train_tracing_count == 1


@pytest.mark.slow
def test_evaluation_counts_every_requested_episode(tmp_path):
    params = _sinusoid("maml", ",task.data.eval_episodes=50")
    trainer = build_trainer(params, str(tmp_path))
    trainer.evaluate()
    # ceil(50 / 20) meta-batches of 20 episodes.
    assert float(trainer.model.score_tracker.count.numpy()) == 60


@pytest.mark.slow
def test_maml_export_adapts_on_a_served_support_set(tmp_path):
    params = _sinusoid("maml", ",task.model.inner_lr=0.05,task.model.eval_inner_steps=3")
    trainer = build_trainer(params, str(tmp_path))
    trainer.train(2)
    export_dir = export_model(trainer, str(tmp_path))
    rng = np.random.default_rng(0)
    x = rng.uniform(-5, 5, size=(10, 1)).astype(np.float32)
    y = (2.0 * np.sin(x - 0.5)).astype(np.float32)
    qx = rng.uniform(-5, 5, size=(7, 1)).astype(np.float32)
    served = serve_in_fresh_process(export_dir, {"support_x": x, "support_y": y, "query_x": qx},
                                    signature_key="few_shot")
    model = trainer.model
    expected = model.adapt_and_predict(x, y, qx).numpy()
    unadapted = model.learner(qx).numpy()
    np.testing.assert_allclose(served["predictions"], expected, atol=1e-5)
    assert np.max(np.abs(expected - unadapted)) > 1e-3  # the inner steps really ran
    default = serve_in_fresh_process(export_dir, {"x": qx})
    np.testing.assert_allclose(default["predictions"], unadapted, atol=1e-5)


@pytest.mark.slow
def test_protonet_omniglot_trains_evaluates_and_serves_any_way_count(tmp_path):
    params = _omniglot("protonet_omniglot", ",task.data.num_ways=10,task.data.num_queries=2")
    outputs = run_experiment(params, "train_and_eval", str(tmp_path))
    accuracy, half_width = outputs["eval"]["accuracy"], outputs["eval"]["accuracy_ci95"]
    assert 0 <= accuracy <= 1 and 0 < half_width < 0.5
    trainer = build_trainer(params, str(tmp_path))
    trainer.restore()
    export_dir = export_model(trainer, str(tmp_path))
    rng = np.random.default_rng(1)
    for ways in (3, 7):
        support = rng.uniform(size=(2 * ways, 28, 28, 1)).astype(np.float32)
        labels = np.repeat(np.arange(ways, dtype=np.int32), 2)
        query = rng.uniform(size=(5, 28, 28, 1)).astype(np.float32)
        served = serve_in_fresh_process(
            export_dir, {"support_x": support, "support_y": labels, "query_x": query},
            signature_key="few_shot")
        expected = trainer.model.few_shot_logits(support, labels, query).numpy()
        assert served["logits"].shape == (5, ways)
        np.testing.assert_allclose(served["logits"], expected, rtol=1e-4, atol=1e-4)
    embeddings = serve_in_fresh_process(export_dir, {"x": query})["embeddings"]
    np.testing.assert_allclose(embeddings, trainer.model.encoder(query).numpy(), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["relationnet_omniglot", "siamese_omniglot", "matching_omniglot",
                                  "hallucination_omniglot", "black_box_omniglot",
                                  "fomaml_omniglot", "anil_omniglot", "reptile_omniglot",
                                  "lstm_meta_omniglot", "maml_omniglot"])
def test_every_omniglot_experiment_trains_and_evaluates(tmp_path, name):
    params = _omniglot(name, ",task.data.meta_batch_size=2,task.data.num_queries=1"
                       ",task.data.eval_meta_batch_size=4,task.data.eval_episodes=8")
    outputs = run_experiment(params, "train_and_eval", str(tmp_path))
    assert np.isfinite(outputs["train"]["loss"])
    assert 0 <= outputs["eval"]["accuracy"] <= 1


def test_missing_data_dir_is_a_clear_error(tmp_path):
    params = experiments.get_experiment("protonet_omniglot").override_from_string(
        f"task.data.data_dir={tmp_path / 'nowhere'}")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_trainer(params, str(tmp_path / "run"))


def test_meta_batch_is_split_across_replicas_and_static():
    from tf_mtml.tasks.meta import MetaLearningTask

    params = _sinusoid("maml")
    task = MetaLearningTask(params.task)
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                         num_replicas_in_sync=2)
    whole = next(iter(task.build_inputs(True)))
    halves = list(task.build_inputs(True, context).take(2))
    for key in whole:
        assert halves[0][key].shape[0] == 2
        np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), whole[key])
