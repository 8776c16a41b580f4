"""Every registered experiment, shrunk, checked for what a TPU needs (used by the TPU tests).

`run_checks(check, names)` runs `python -m tests.train.tpu_checks CHECK NAMES` from the
repository root: a fresh process, so that logical CPUs and XLA flags are set before
TensorFlow starts, which prints one JSON line `{name: result}`; an experiment that raises
gets `{"error": traceback}` and the others still run.

- `shapes`: the training inputs, built through a 2-CPU `MirroredStrategy` with
  `distribute_datasets_from_function` (as `Trainer._train_iterator` does) and directly with
  `task.build_inputs(True, ctx)`, and the evaluation inputs (or the task's `evaluate_model`).
- `xla`: one `task.train_step` under `strategy.run` in `tf.function(jit_compile=True)` with the
  default strategy, on a `Trainer`'s model, optimizer and loss metric.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
DATA_SOURCES = ("omniglot", "census_income")
# Shrinks each family: tiny models, batches divisible by 2 replicas, few evaluation episodes.
_META = ("task.data.meta_batch_size=2,task.data.eval_meta_batch_size=2,"
         "task.data.eval_episodes=4,task.data.num_queries=1,task.model.filters=4,"
         "task.model.hidden_units=[8],task.model.attention_blocks=1,task.model.attention_heads=1")
_OMNIGLOT = "task.data.train_split=val,task.data.eval_split=test"
_CONTRASTIVE = ("task.data.global_batch_size=8,task.data.classes_per_batch=4,"
                "task.model.filters=4,task.model.projection_units=[8]")
_MULTITASK = ("task.data.global_batch_size=8,task.data.num_train_examples=64,"
              "task.data.num_eval_examples=32,task.data.input_dim=4")
_RANKING = ("task.data.num_days=2,task.data.requests_per_day=20,task.data.num_users=10,"
            "task.data.list_size=4,task.data.new_videos_per_day=8,"
            "task.data.video_lifetime_days=2,task.data.global_batch_size=8,"
            "task.model.num_experts=2,task.model.expert_units=[4],task.model.tower_units=[4],"
            "task.ndcg_cutoffs=[2]")


def experiment_names() -> list[str]:
    from tf_mtml.configs import experiments

    return experiments.list_experiments()


def needs_data(name: str) -> bool:
    """Whether experiment `name` reads a real data set (Omniglot, census) from disk."""
    from tf_mtml.configs import experiments

    return getattr(experiments.get_experiment(name).task.data, "source", "") in DATA_SOURCES


def meta_algorithm(name: str) -> str | None:
    """The meta-learning algorithm of experiment `name`; None for other task families."""
    from tf_mtml.configs import experiments
    from tf_mtml.configs.meta import MetaLearningConfig

    task = experiments.get_experiment(name).task
    return task.model.algorithm if isinstance(task, MetaLearningConfig) else None


def is_gradient_based_meta(name: str) -> bool:
    """Whether `name` is a MAML-family, Reptile or LSTM meta-learning experiment."""
    from tf_mtml.configs.meta import GRADIENT_BASED

    return meta_algorithm(name) in GRADIENT_BASED


def data_root() -> str | None:
    """The real data's root (`TF_MTML_DATA_DIR`, else `../shared/data`), or None."""
    from tf_mtml.data.data_dir import resolve_data_dir

    try:
        return resolve_data_dir()
    except FileNotFoundError:
        return None


def tiny_params(name: str, root: str | None):
    """The registered experiment `name`, shrunk to seconds, validated."""
    from tf_mtml.configs import experiments

    params = experiments.get_experiment(name)
    family = type(params.task).__name__
    data = params.task.data
    if family == "MetaLearningConfig":
        overrides = [_META]
        if data.source == "omniglot":
            overrides.append(_OMNIGLOT)
            if data.num_ways > 5:  # ProtoNet trains 60-way; 5 keeps the episodes small
                overrides.append("task.data.num_ways=5")
        if params.task.model.inner_steps > 1:  # XLA unrolls every inner step
            overrides.append("task.model.inner_steps=1,task.model.eval_inner_steps=1")
    elif family == "ContrastiveConfig":
        overrides = [_CONTRASTIVE] + ([_OMNIGLOT] if data.source == "omniglot" else [])
    elif family == "RankingConfig":
        overrides = [_RANKING]
    else:
        overrides = [_MULTITASK if data.source != "census_income"
                     else "task.data.global_batch_size=8"]
    if getattr(data, "source", "") in DATA_SOURCES:
        overrides.append(f"task.data.data_dir={root}")
    params.override_from_string(",".join(overrides))
    params.validate()
    return params


def _shapes(spec) -> list[list[int | None]]:
    import tensorflow as tf

    return [s.shape.as_list() for s in tf.nest.flatten(spec, expand_composites=True)]


def _input_shapes(task, training: bool, strategy) -> dict:
    """Element shapes of the inputs, distributed and plain, and of one distributed element."""
    import tensorflow as tf

    distributed = strategy.distribute_datasets_from_function(
        lambda ctx: task.build_inputs(training, ctx))
    element = next(iter(distributed))
    values = [v for per_replica in tf.nest.flatten(element, expand_composites=True)
              for v in strategy.experimental_local_results(per_replica)]
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                         num_replicas_in_sync=strategy.num_replicas_in_sync)
    return {"distributed": _shapes(distributed.element_spec),
            "values": [v.shape.as_list() for v in values],
            "plain": _shapes(task.build_inputs(training).element_spec),
            "plain_per_replica": _shapes(task.build_inputs(training, context).element_spec)}


def _shapes_result(name: str, root: str | None, strategy) -> dict:
    from tf_mtml.tasks.factory import build_task

    task = build_task(tiny_params(name, root))
    result = {"replicas": strategy.num_replicas_in_sync,
              "train": _input_shapes(task, True, strategy)}
    if hasattr(task, "evaluate_model"):
        try:
            task.build_inputs(False)
            result["eval"] = "build_inputs(False) returned evaluation batches"
        except ValueError:
            result["eval"] = "evaluate_model"
    else:
        result["eval"] = _input_shapes(task, False, strategy)
    return result


def _xla_result(name: str, root: str | None) -> dict:
    """Meta-learning experiments run with `meta_batch_mode=map_fn`, as under a TPU strategy."""
    import tensorflow as tf

    from tf_mtml.tasks.factory import build_task
    from tf_mtml.train.loop import Trainer

    params = tiny_params(name, root)
    if type(params.task).__name__ == "MetaLearningConfig":
        params.override_from_string("task.model.meta_batch_mode=map_fn")
    trainer = Trainer(build_task(params), tf.distribute.get_strategy(), params.trainer,
                      tempfile.mkdtemp())
    inputs = next(iter(trainer.task.build_inputs(True)))
    before = [w.numpy().copy() for w in trainer.model.trainable_weights]

    @tf.function(jit_compile=True)
    def step(inputs):
        trainer.strategy.run(trainer.task.train_step, args=(
            inputs, trainer.model, trainer.optimizer, trainer.loss_metric))

    step(inputs)
    after = [w.numpy() for w in trainer.model.trainable_weights]
    return {"loss": float(trainer.loss_metric.result()),
            "changed": sum(not np.array_equal(a, b) for a, b in zip(before, after, strict=True)),
            "num_weights": len(after),
            "meta_batch_mode": getattr(trainer.model, "meta_batch_mode", None)}


def main(check: str, names: list[str]) -> None:
    import keras

    from tf_mtml.train.distribute import get_strategy

    root = data_root()
    strategy = get_strategy("mirrored", num_cpu_devices=2) if check == "shapes" else None
    results = {}
    for name in names:
        try:
            results[name] = (_shapes_result(name, root, strategy) if check == "shapes"
                             else _xla_result(name, root))
        except Exception:  # reported per experiment; the others still run
            results[name] = {"error": traceback.format_exc()}
        keras.backend.clear_session()
    print(json.dumps(results))


def run_checks(check: str, names: list[str], timeout: int = 600) -> dict:
    """`{name: result}` of `check` ("shapes" or "xla") on `names`, run in a fresh process."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if check == "xla":
        # Checks compatibility, not speed: LLVM's optimisations double the compile time or more.
        env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
    result = subprocess.run(
        [sys.executable, "-m", "tests.train.tpu_checks", check, ",".join(names)],
        cwd=REPOSITORY_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"`{check}` checks failed:\n{result.stderr[-5000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_available(check: str, names: list[str]) -> dict:
    """`run_checks` on those of `names` whose data set is available."""
    root = data_root()
    return run_checks(check, [n for n in names if root is not None or not needs_data(n)])


def checked_result(report: dict, name: str) -> dict:
    """`report[name]`; skips an experiment whose data is absent, fails one that raised."""
    import pytest

    if name not in report:
        pytest.skip(f"{name} needs the real data set, and no data root was found "
                    "($TF_MTML_DATA_DIR or ../shared/data).")
    if "error" in report[name]:
        pytest.fail(f"{name} raised:\n{report[name]['error']}")
    return report[name]


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].split(","))


def assert_xla_step_trained(result: dict) -> None:
    """The compiled step gave a finite loss and changed at least one weight."""
    assert math.isfinite(result["loss"]), result
    assert result["changed"] > 0, f"the XLA step left all {result['num_weights']} weights as is"
