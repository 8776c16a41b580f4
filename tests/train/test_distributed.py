"""The mirrored strategy over 2 logical CPUs gives the single-device result (same global batch).

Runs in a subprocess: logical devices must be configured before TensorFlow initialises.
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
        params = get_experiment("mmoe_synthetic").override_from_string(
            "task.data.num_train_examples=512,task.data.num_eval_examples=128,"
            "task.data.global_batch_size=32,task.data.input_dim=8,trainer.steps_per_loop=10,"
            "trainer.checkpoint_interval=10,trainer.validation_interval=10,"
            f"task.model.weighting={weighting},trainer.optimizer.name=sgd,"
            "trainer.optimizer.learning_rate=0.05")
        strategy = get_strategy(strategy_name, num_cpu_devices=2)
        trainer = Trainer(build_task(params), strategy, params.trainer, model_dir)
        trainer.train(20)
        assert strategy.num_replicas_in_sync == (2 if strategy_name == "mirrored" else 1)
        return [w.numpy() for w in trainer.model.weights], trainer.evaluate()

    weighting = sys.argv[2]
    single, eval_single = run("default", sys.argv[1] + "/single", weighting)
    mirrored, eval_mirrored = run("mirrored", sys.argv[1] + "/mirrored", weighting)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(single, mirrored))
    print("MAXDIFF", diff, eval_single["loss"], eval_mirrored["loss"])
""")


@pytest.mark.slow
@pytest.mark.parametrize("weighting", ["static", "uncertainty"])
def test_mirrored_two_cpus_matches_single_device(tmp_path, weighting):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), weighting],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("MAXDIFF"))
    diff, loss_single, loss_mirrored = map(float, line.split()[1:])
    assert diff < 1e-5
    assert abs(loss_single - loss_mirrored) < 1e-5 * max(1.0, abs(loss_single))
