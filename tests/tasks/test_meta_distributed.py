"""A meta-batch split over 2 logical CPUs gives the single-device update (same global batch).

Runs in a subprocess: logical devices must be configured before TensorFlow initialises.
"""

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    from tf_mtml.configs import experiments
    from tf_mtml.tasks.factory import build_task
    from tf_mtml.train.distribute import get_strategy
    from tf_mtml.train.loop import Trainer

    def run(strategy_name, model_dir, algorithm):
        params = experiments.get_experiment(f"{algorithm}_sinusoid").override_from_string(
            "trainer.steps_per_loop=3,trainer.checkpoint_interval=3,"
            "trainer.validation_interval=3,task.data.meta_batch_size=4,"
            "task.data.eval_episodes=20,task.data.eval_meta_batch_size=10,"
            "task.model.hidden_units=[8],trainer.optimizer.name=sgd,"
            "trainer.optimizer.learning_rate=0.01")
        strategy = get_strategy(strategy_name, num_cpu_devices=2)
        trainer = Trainer(build_task(params), strategy, params.trainer, model_dir)
        trainer.train(6)
        assert strategy.num_replicas_in_sync == (2 if strategy_name == "mirrored" else 1)
        return [w.numpy() for w in trainer.model.trainable_weights], trainer.evaluate()

    algorithm = sys.argv[2]
    single, eval_single = run("default", sys.argv[1] + "/single", algorithm)
    mirrored, eval_mirrored = run("mirrored", sys.argv[1] + "/mirrored", algorithm)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(single, mirrored))
    print("MAXDIFF", diff, eval_single["mse"], eval_mirrored["mse"])
""")


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["maml", "meta_sgd"])
def test_mirrored_meta_batch_matches_single_device(tmp_path, algorithm):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), algorithm],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("MAXDIFF"))
    diff, mse_single, mse_mirrored = map(float, line.split()[1:])
    assert diff < 1e-5
    assert mse_single == pytest.approx(mse_mirrored, rel=1e-4)
