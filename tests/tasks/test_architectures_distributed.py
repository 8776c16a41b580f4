"""PLE and soft sharing (a loss term) train alike on 2 mirrored logical CPUs and one device.

Runs in a subprocess: logical devices must be configured before TensorFlow initialises.
"""

import subprocess
import sys
import textwrap

import pytest

SMALL = ("task.data.num_train_examples=256,task.data.num_eval_examples=64,"
         "task.data.global_batch_size=32,task.data.input_dim=6,task.model.expert_units=[4],"
         "task.model.tower_units=[3],trainer.steps_per_loop=3,trainer.checkpoint_interval=3,"
         "trainer.validation_interval=3")

MIRRORED_SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    from tf_mtml.configs import multitask_experiments
    from tf_mtml.configs.registry import get_experiment
    from tf_mtml.tasks.factory import build_task
    from tf_mtml.train.distribute import get_strategy
    from tf_mtml.train.loop import Trainer

    # One strategy of each kind for the whole process: a second MirroredStrategy would reuse
    # the first one's collective instance keys.
    strategies = {name: get_strategy(name, num_cpu_devices=2) for name in ("default", "mirrored")}

    def run(strategy_name, model_dir, architecture):
        params = get_experiment("mmoe_synthetic").override_from_string(
            f"{sys.argv[2]},task.model.architecture={architecture},"
            "task.model.soft_sharing_l2=0.1,trainer.optimizer.name=sgd,"
            "trainer.optimizer.learning_rate=0.05")
        trainer = Trainer(build_task(params), strategies[strategy_name], params.trainer,
                          model_dir)
        trainer.train(6)
        return [w.numpy() for w in trainer.model.weights], trainer.evaluate()["loss"]

    for architecture in sys.argv[3:]:
        single, loss_single = run("default", f"{sys.argv[1]}/{architecture}/1", architecture)
        mirrored, loss_mirrored = run("mirrored", f"{sys.argv[1]}/{architecture}/2",
                                      architecture)
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(single, mirrored))
        print("MAXDIFF", architecture, diff, loss_single, loss_mirrored)
""")


@pytest.mark.slow
def test_mirrored_two_cpus_matches_single_device(tmp_path):
    """The soft-sharing penalty (a model loss) and PLE train alike on 2 replicas."""
    # SGD: the update is linear in the gradient, so a penalty counted once per replica (or
    # missing on one) would show.
    architectures = ["soft_sharing", "ple"]
    result = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(tmp_path), SMALL,
                             *architectures], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [x.split() for x in result.stdout.splitlines() if x.startswith("MAXDIFF")]
    assert [line[1] for line in lines] == architectures
    for _, _, diff, loss_single, loss_mirrored in lines:
        assert float(diff) < 1e-5
        assert abs(float(loss_single) - float(loss_mirrored)) < 1e-5 * max(
            1.0, abs(float(loss_single)))
