"""Gradient-level methods and GradNorm under the mirrored strategy on 2 logical CPUs give the
single-device result: per-task gradients are summed over replicas before they are combined.

Runs in a subprocess (one per method): logical devices must be configured before TensorFlow
initialises, and a second mirrored strategy in one process can clash in its collective ops.
"""

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import sys, numpy as np, tensorflow as tf
    from tf_mtml.configs import multitask_experiments
    from tf_mtml.configs.registry import get_experiment
    from tf_mtml.tasks.factory import build_task
    from tf_mtml.train.distribute import get_strategy
    from tf_mtml.train.loop import Trainer

    def run(strategy_name, model_dir, weighting):
        # Negatively correlated tasks: the task gradients conflict (PCGrad projects).
        params = get_experiment("mmoe_synthetic").override_from_string(
            "task.data.num_train_examples=256,task.data.num_eval_examples=64,"
            "task.data.global_batch_size=32,task.data.input_dim=8,task.data.correlation=-0.5,"
            "task.model.num_experts=4,trainer.steps_per_loop=10,trainer.checkpoint_interval=10,"
            "trainer.validation_interval=10,trainer.optimizer.name=sgd,"
            f"trainer.optimizer.learning_rate=0.05,task.model.weighting={weighting},"
            "task.model.gradient_diagnostics=true")
        strategy = get_strategy(strategy_name, num_cpu_devices=2)
        trainer = Trainer(build_task(params), strategy, params.trainer, model_dir)
        logs = trainer.train(20)
        assert strategy.num_replicas_in_sync == (2 if strategy_name == "mirrored" else 1)
        return [w.numpy() for w in trainer.model.weights], logs

    weighting = sys.argv[2]
    single, logs_single = run("default", sys.argv[1] + "/single", weighting)
    mirrored, logs_mirrored = run("mirrored", sys.argv[1] + "/mirrored", weighting)
    assert len(single) == len(mirrored) > 0
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(single, mirrored))
    print("RESULT", diff, *(logs[k] for logs in (logs_single, logs_mirrored)
                            for k in ("diagnostics/cos/y1__y2", "loss")))
""")


@pytest.mark.slow
@pytest.mark.parametrize("weighting", ["pcgrad", "mgda", "gradnorm"])
def test_mirrored_two_cpus_matches_single_device(tmp_path, weighting):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), weighting],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT"))
    diff, cos_single, loss_single, cos_mirrored, loss_mirrored = map(float, line.split()[1:])
    assert diff < 1e-5
    assert cos_single < 0  # conflicting tasks: the nonlinear part of each method is active
    assert cos_mirrored == pytest.approx(cos_single, abs=1e-5)
    assert loss_mirrored == pytest.approx(loss_single, rel=1e-5)
