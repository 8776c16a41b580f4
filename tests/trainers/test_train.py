"""The absl trainer and export entry points, run as a user runs them (fresh processes)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.configs import multitask_experiments  # noqa: F401
from tf_mtml.configs.registry import get_experiment
from tf_mtml.serving.session_loader import serve_in_fresh_process
from tf_mtml.train.run import build_trainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = ("task.data.num_train_examples=512,task.data.num_eval_examples=128,"
         "task.data.global_batch_size=32,task.data.input_dim=8,trainer.steps_per_loop=20,"
         "trainer.checkpoint_interval=20,trainer.validation_interval=20")


def _run(module, *args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _train(model_dir, *extra):
    return _run("trainers.train", "--experiment=mmoe_synthetic", f"--model_dir={model_dir}",
                f"--params_override={SMALL}", *extra)


@pytest.mark.slow
def test_train_resume_eval_and_export_served_by_the_session_loader(tmp_path):
    model_dir = str(tmp_path / "run")
    first = _train(model_dir, "--train_steps=40")
    assert first.returncode == 0, first.stderr[-3000:]
    files = set(os.listdir(model_dir))
    assert {"params.yaml", "checkpoint", "ckpt-40.index", "train", "eval",
            "eval_results.json"} <= files
    results = json.load(open(os.path.join(model_dir, "eval_results.json")))
    assert results["step"] == 40 and {"loss", "y1/mse", "y2/mse", "y1/loss"} <= set(results)
    assert "train_steps: 40" in open(os.path.join(model_dir, "params.yaml")).read()

    second = _train(model_dir, "--train_steps=60")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Restored" in second.stderr and "ckpt-40" in second.stderr
    assert json.load(open(os.path.join(model_dir, "eval_results.json")))["step"] == 60

    exported = _run("trainers.train", "--experiment=mmoe_synthetic", f"--model_dir={model_dir}",
                    "--mode=export")
    assert exported.returncode == 0, exported.stderr[-3000:]
    export_dir = os.path.join(model_dir, "export", "1")
    assert export_dir in exported.stdout
    again = _run("export.export_saved_model", "--experiment=mmoe_synthetic",
                 f"--model_dir={model_dir}")
    assert again.returncode == 0 and os.path.isdir(os.path.join(model_dir, "export", "2"))

    params = get_experiment("mmoe_synthetic").override_from_yaml(
        os.path.join(model_dir, "params.yaml"))
    trainer = build_trainer(params, str(tmp_path / "unused"))
    trainer.checkpoint.restore(tf.train.latest_checkpoint(model_dir)).expect_partial()
    x = np.random.default_rng(0).normal(size=(5, 8)).astype("float32")
    expected = {k: v.numpy() for k, v in trainer.model.serve({"features": x}).items()}
    served = serve_in_fresh_process(export_dir, {"features": x})
    assert set(served) == {"y1", "y2"}
    for key in expected:
        np.testing.assert_allclose(served[key], expected[key], atol=1e-5)


@pytest.mark.slow
def test_mode_eval_writes_results_from_the_checkpoint(tmp_path):
    model_dir = str(tmp_path)
    assert _train(model_dir, "--train_steps=20", "--mode=train").returncode == 0
    assert not os.path.exists(os.path.join(model_dir, "eval_results.json"))
    evaluated = _train(model_dir, "--mode=eval")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    results = json.load(open(os.path.join(model_dir, "eval_results.json")))
    assert results["step"] == 20 and results["y1/mse"] > 0


def test_helpfull_lists_the_experiments():
    result = _run("trainers.train", "--helpfull")
    assert "mmoe_synthetic" in result.stdout and "shared_bottom_synthetic" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--experiment=nope", "--model_dir=/tmp/x"],
     "Unknown experiment 'nope'. Registered experiments: anil_omniglot"),
    (["--experiment=mmoe_synthetic", "--model_dir=/tmp/x", "--params_override=trainer.steps"],
     "Malformed override 'trainer.steps'"),
    (["--experiment=mmoe_synthetic", "--model_dir=/tmp/x", "--tpu=local"], "conflict"),
    (["--experiment=mmoe_synthetic", "--model_dir=/tmp/x", "--strategy=gpu"],
     "Unknown `runtime.strategy=gpu`"),
])
def test_bad_flags_fail_with_a_clear_message(args, message):
    result = _run("trainers.train", *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_eval_without_a_checkpoint_says_train_first(tmp_path):
    result = _train(str(tmp_path / "empty"), "--mode=eval")
    assert result.returncode == 2
    assert "needs a trained checkpoint" in result.stderr and "Train first" in result.stderr


def test_data_dir_flag_sets_the_data_root_of_the_experiment(tmp_path):
    from tf_mtml.configs import experiments  # noqa: F401
    from trainers.train import build_params

    params = build_params("protonet_omniglot", str(tmp_path), "train", [], "", None, None, None,
                          data_dir="/data/root")
    assert params.task.data.data_dir == "/data/root"
    params = build_params("protonet_omniglot", str(tmp_path), "train", [],
                          "task.data.data_dir=/other", None, None, None)
    assert params.task.data.data_dir == "/other"
