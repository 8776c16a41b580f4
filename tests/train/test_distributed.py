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


RESUME_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, tensorflow as tf
    from tf_mtml.configs import multitask_experiments
    from tf_mtml.configs.registry import get_experiment
    from tf_mtml.tasks.factory import build_task
    from tf_mtml.train.distribute import get_strategy
    from tf_mtml.train.loop import Trainer

    from tf_mtml.configs import meta_experiments
    loops = ("trainer.steps_per_loop=10,trainer.checkpoint_interval=10,"
             "trainer.validation_interval=10")
    overrides = {
        "mmoe_synthetic": "task.data.num_train_examples=512,task.data.num_eval_examples=128,"
                          "task.data.global_batch_size=32,task.data.input_dim=8," + loops,
        "maml_sinusoid": "task.data.meta_batch_size=4,task.data.eval_episodes=8," + loops,
    }
    params = get_experiment(sys.argv[2]).override_from_string(overrides[sys.argv[2]])
    strategy = get_strategy("mirrored", num_cpu_devices=2)
    trainer = lambda d: Trainer(build_task(params), strategy, params.trainer, sys.argv[1] + d)
    whole = trainer("/whole")
    whole.train(30)
    trainer("/split").train(20)
    resumed = trainer("/split")
    resumed.train(30)
    print("TRACKABLE", isinstance(resumed._iterator, tf.__internal__.tracking.Trackable))
    print("MAXDIFF", max(float(np.max(np.abs(a.numpy() - b.numpy())))
                         for a, b in zip(whole.model.weights, resumed.model.weights)))
""")


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["mmoe_synthetic", "maml_sinusoid"])
def test_mirrored_resume_continues_the_input_stream(tmp_path, experiment):
    # A distributed iterator cannot be checkpointed: the resumed run skips the 20 steps it
    # already trained on (mmoe: 512 examples / 32 = 16 steps per epoch, so step 20 is
    # mid-epoch), or starts its indexed episodes at step 20 (maml).
    result = subprocess.run([sys.executable, "-c", RESUME_SCRIPT, str(tmp_path), experiment],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(x.split(" ", 1) for x in result.stdout.splitlines() if " " in x)
    assert lines["TRACKABLE"] == "False"
    assert float(lines["MAXDIFF"]) < 1e-6
