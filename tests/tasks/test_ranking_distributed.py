"""The ranking schedule over 2 logical CPUs gives the single-device weights and day results.

Runs in a subprocess: logical devices must be configured before TensorFlow initialises.
Expert dropout is off: each replica would draw its own dropout masks.
"""

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json, sys, numpy as np
    from tf_mtml.configs import experiments
    from tf_mtml.tasks.factory import build_task
    from tf_mtml.train.distribute import get_strategy
    from tf_mtml.train.loop import Trainer

    def run(strategy_name, model_dir):
        params = experiments.get_experiment("youtube_ranking").override_from_string(
            "task.data.num_days=2,task.data.requests_per_day=40,task.data.num_users=30,"
            "task.data.list_size=6,task.data.new_videos_per_day=10,"
            "task.data.video_lifetime_days=3,task.data.global_batch_size=16,"
            "task.model.num_experts=2,task.model.expert_units=[8],task.model.tower_units=[4],"
            "task.model.expert_dropout=0.0,task.ndcg_cutoffs=[3],trainer.train_steps=8,"
            "trainer.steps_per_loop=2,trainer.checkpoint_interval=4,"
            "trainer.validation_interval=4,trainer.optimizer.name=sgd,"
            "trainer.optimizer.learning_rate=0.1")
        strategy = get_strategy(strategy_name, num_cpu_devices=2)
        task = build_task(params)
        trainer = Trainer(task, strategy, params.trainer, model_dir)
        initial = [w.numpy() for w in trainer.model.trainable_weights]
        results = task.run_schedule(trainer)["eval"]
        final = [w.numpy() for w in trainer.model.trainable_weights]
        moved = max(float(np.max(np.abs(a - b))) for a, b in zip(initial, final))
        assert strategy.num_replicas_in_sync == (2 if strategy_name == "mirrored" else 1)
        return final, results, moved

    single, eval_single, moved = run("default", sys.argv[1] + "/single")
    mirrored, eval_mirrored, _ = run("mirrored", sys.argv[1] + "/mirrored")
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(single, mirrored))
    print("RESULT", json.dumps({"diff": diff, "moved": moved, "single": eval_single,
                                "mirrored": eval_mirrored}))
""")


@pytest.mark.slow
def test_mirrored_schedule_matches_single_device(tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT"))
    report = json.loads(line.split(" ", 1)[1])
    assert report["diff"] < 1e-5 and report["moved"] > 1e-3  # trained, identically
    assert set(report["single"]) == set(report["mirrored"])
    assert {k.split("/")[0] for k in report["single"]} == {"day_1", "day_2"}
    for key, value in report["single"].items():
        assert report["mirrored"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
