"""Tests for tf_mtml.tasks.contrastive: two-view inputs, the train step, evaluation, export."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.configs.contrastive_experiments import simclr_digits, supcon_omniglot
from tf_mtml.configs.experiment import TrainerConfig
from tf_mtml.data.data_dir import resolve_data_dir
from tf_mtml.serving.export import read_signature_defs
from tf_mtml.serving.session_loader import (
    run_signature_with_session_loader,
    serve_in_fresh_process,
)
from tf_mtml.tasks.contrastive import LABELS, VIEWS, ContrastiveTask
from tf_mtml.train.loop import Trainer
from tf_mtml.train.run import run_experiment

TINY = ("data.global_batch_size=16,model.filters=16,model.projection_units=[8],"
        "evaluation.labels_per_class=[1,2],evaluation.finetune_steps=2,"
        "evaluation.finetune_batch_size=8,evaluation.ood_neighbors=3")
IDENTITY_VIEWS = ("augment.crop_scale=[1.0,1.0],augment.crop_ratio=[1.0,1.0],"
                  "augment.brightness=0.0,augment.contrast=0.0")


def _task(overrides="", seed=0, experiment=simclr_digits):
    config = experiment().task
    config.override_from_string(",".join(filter(None, [TINY, overrides])))
    config.validate()
    return ContrastiveTask(config, seed=seed)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _supcon_reference(z, labels, temperature):
    """Numpy SupCon (Khosla et al. eq. 2) over two views; all-distinct labels = NT-Xent."""
    b = len(z)
    rows = _unit(np.concatenate([z[:, 0], z[:, 1]]).astype(np.float64))
    labels = np.tile(labels, 2)
    logits = rows @ rows.T / temperature
    np.fill_diagonal(logits, -np.inf)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    positive = (labels[:, None] == labels[None]) & ~np.eye(2 * b, dtype=bool)
    anchor = -np.where(positive, log_probs, 0.0).sum(axis=1) / positive.sum(axis=1)
    return anchor.reshape(2, b).mean(axis=0)


def test_views_are_seeded_and_paired_with_their_labels():
    task = _task(IDENTITY_VIEWS)
    batch = next(iter(task.build_inputs(True)))
    views, labels = batch[VIEWS].numpy(), batch[LABELS].numpy()
    assert views.shape == (16, 2, 8, 8, 1) and labels.shape == (16,)
    # Without augmentation both views are the original image, found with its own label.
    np.testing.assert_allclose(views[:, 0], views[:, 1], atol=1e-6)
    digits = task.digits
    for view, label in zip(views[:, 0], labels, strict=True):
        match = np.flatnonzero(np.abs(digits.train_images - view).max(axis=(1, 2, 3)) < 1e-5)
        assert match.size and label in digits.train_labels[match]

    augmented = _task()
    first, again = (next(iter(augmented.build_inputs(True)))[VIEWS].numpy() for _ in range(2))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first[:, 0], first[:, 1])
    assert 0.0 <= first.min() and first.max() <= 1.0
    other_seed = next(iter(_task(seed=1).build_inputs(True)))[VIEWS].numpy()
    assert not np.allclose(first, other_seed)


def test_input_pipelines_read_disjoint_shards():
    task = _task(IDENTITY_VIEWS)
    seen = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                             num_replicas_in_sync=2)
        batch = next(iter(task.build_inputs(True, context)))
        assert batch[VIEWS].shape[0] == 8
        seen.append({view.tobytes() for view in batch[VIEWS].numpy()[:, 0]})
    shards = [set(map(bytes, (i.tobytes() for i in task.digits.train_images[p::2])))
              for p in range(2)]
    assert seen[0] <= shards[0] and seen[1] <= shards[1]


@pytest.mark.parametrize("loss", ["nt_xent", "supcon"])
def test_train_step_minimises_the_contrastive_loss(loss):
    task = _task(f"model.loss={loss},model.temperature=0.5")
    model = task.build_model()
    optimizer = keras.optimizers.Adam(1e-2)
    optimizer.build(model.trainable_variables)
    metric = keras.metrics.Mean()
    batch = next(iter(task.build_inputs(True)))
    views = batch[VIEWS]
    z = model(tf.concat([views[:, 0], views[:, 1]], 0), training=True).numpy()
    z = np.stack([z[:16], z[16:]], axis=1)
    labels = batch[LABELS].numpy() if loss == "supcon" else np.arange(16)
    expected = _supcon_reference(z, labels, 0.5).mean()

    before = [v.numpy().copy() for v in model.trainable_variables]
    task.train_step(batch, model, optimizer, metric)
    assert float(metric.result()) == pytest.approx(expected, rel=1e-4)
    assert any(not np.allclose(a, v.numpy()) for a, v in zip(before, model.trainable_variables,
                                                               strict=True))


@pytest.mark.slow
def test_train_and_eval_then_export_serves_embeddings_and_ood_scores(tmp_path):
    params = simclr_digits()
    params.task.override_from_string(
        f"{TINY},evaluation.labels_per_class=[1],evaluation.scratch_baseline=true")
    params.trainer = TrainerConfig(train_steps=2, steps_per_loop=2, checkpoint_interval=2,
                                   validation_interval=2)
    model_dir = str(tmp_path)
    run_experiment(params, "train_and_eval", model_dir)
    results = json.load(open(os.path.join(model_dir, "eval_results.json")))
    assert set(results) == {"step", "probe/acc_1_per_class", "finetune/acc_1_per_class",
                            "scratch/acc_1_per_class", "ood/eval_outlier_fraction"}
    assert results["step"] == 2
    assert all(0.0 <= v <= 1.0 for k, v in results.items() if k != "step")

    export_dir = run_experiment(params, "export", model_dir)["export_dir"]
    assert set(read_signature_defs(export_dir)) == {"serving_default", "ood_score"}
    task = ContrastiveTask(params.task)
    trainer = Trainer(task, tf.distribute.get_strategy(), params.trainer, model_dir)
    trainer.restore()
    task.adapt_ood_scorer(trainer.model)
    model = trainer.model
    # The scorer's references are the current embeddings of the reference images.
    np.testing.assert_allclose(model.ood_scorer.references.numpy(),
                               model.embed(task.reference_images()).numpy(), atol=1e-5)
    images = np.concatenate([task.digits.test_images[:5],
                             np.random.default_rng(0).uniform(size=(3, 8, 8, 1))]).astype("f4")
    served = serve_in_fresh_process(export_dir, {"images": images})
    np.testing.assert_allclose(served["embedding"], model.embed(images).numpy(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(served["embedding"], axis=1), 1.0, atol=1e-5)
    scored = run_signature_with_session_loader(export_dir, {"images": images}, "ood_score")
    expected = model.ood_score(images).numpy()
    np.testing.assert_allclose(scored["ood_score"], expected, atol=1e-5)
    np.testing.assert_array_equal(scored["is_outlier"],
                                  expected > model.ood_scorer.threshold.numpy())


MIRRORED = textwrap.dedent("""
    import sys, numpy as np, tensorflow as tf
    from tf_mtml.configs.contrastive_experiments import simclr_digits
    from tf_mtml.tasks.factory import build_task
    from tf_mtml.train.distribute import get_strategy
    from tf_mtml.train.loop import Trainer

    params = simclr_digits().override_from_string(sys.argv[2])
    strategy = get_strategy("mirrored", num_cpu_devices=2)
    trainer = Trainer(build_task(params), strategy, params.trainer, sys.argv[1])
    logs = trainer.train(2)
    results = trainer.evaluate()
    print("RESULT", strategy.num_replicas_in_sync, logs["loss"], results["probe/acc_1_per_class"],
          trainer.model.ood_scorer.references.numpy().any())
""")


@pytest.mark.slow
def test_mirrored_training_and_evaluation_on_two_cpus(tmp_path):
    overrides = ",".join(f"task.{o}" for o in TINY.split(",")) + (
        ",task.evaluation.labels_per_class=[1],trainer.train_steps=2,trainer.steps_per_loop=2,"
        "trainer.checkpoint_interval=2,trainer.validation_interval=2")
    result = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path), overrides],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT"))
    replicas, loss, accuracy, filled = line.split()[1:]
    assert int(replicas) == 2 and np.isfinite(float(loss)) and 0 <= float(accuracy) <= 1
    assert filled == "True"


def test_evaluation_batches_and_oversized_batches_are_refused():
    with pytest.raises(ValueError, match=r"evaluates with `evaluate_model`"):
        _task().build_inputs(False)
    with pytest.raises(ValueError, match=r"batch of 2048 images exceeds the 1258 digits"):
        _task("data.global_batch_size=2048").build_inputs(True)


def _omniglot_or_skip():
    try:
        root = resolve_data_dir()
    except FileNotFoundError as e:
        pytest.skip(f"Omniglot data not available: {e}")
    if not os.path.isdir(os.path.join(root, "omniglot")):
        pytest.skip(f"Omniglot data not available under {root}/omniglot")


def test_supcon_omniglot_batches_and_few_shot_evaluation():
    _omniglot_or_skip()
    task = _task("data.global_batch_size=8,data.classes_per_batch=4,evaluation.episodes=4,"
                 "evaluation.episode_batch_size=2,evaluation.num_queries=2,"
                 "evaluation.ood_max_references=64,"
                 "model.pool_blocks=4", experiment=supcon_omniglot)
    batch = next(iter(task.build_inputs(True)))
    assert batch[VIEWS].shape == (8, 2, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(batch[LABELS].numpy()), [2, 2, 2, 2])
    model = task.build_model()
    results = task.evaluate_model(model)
    assert set(results) == {"fewshot/acc_5way_1shot", "fewshot/acc_5way_1shot_ci95",
                            "ood/eval_outlier_fraction"}
    assert 0.0 <= results["fewshot/acc_5way_1shot"] <= 1.0
    assert results["fewshot/acc_5way_1shot_ci95"] > 0.0
