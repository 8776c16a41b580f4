"""The custom training loop, in the shape of Orbit's StandardTrainer / StandardEvaluator.

`train_loop_begin` resets the metrics, `train_step(iterator)` runs one distributed step,
`_train_loop` runs `steps_per_loop` of them inside one `tf.function` with `tf.range` (one trace
for the whole run, one host call per loop: what TPUs need), and `train_loop_end` reads the
metrics. Between loops, and only there, the loop writes TensorBoard summaries, checks that
nothing became non-finite, saves checkpoints, evaluates and answers termination signals. Numpy
never runs inside the compiled steps.

Non-finite steps (`tf_mtml.train.nonfinite`): the optimizer never applies non-finite gradients;
`trainer.nan_policy=stop` ends the loop at that step and raises, `skip` logs and goes on.
Neither ever checkpoints a non-finite variable.

Multi-worker: every worker runs the same loop (checkpoints and evaluation are collectives);
the chief writes to `model_dir`, the other workers write their checkpoints to
`model_dir/workers/worker_<id>/` (kept, one checkpoint, so their copies can be compared) and
no summaries. Every worker restores from `model_dir`, which must therefore be shared storage
(GCS, NFS) in a real cluster.
"""

from __future__ import annotations

import inspect
import math
import os
import sys
from collections.abc import Callable
from typing import Any, Protocol

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_mtml.configs.experiment import OptimizerConfig, TrainerConfig
from tf_mtml.train.nonfinite import NonFiniteGuard, build_guarded_optimizer
from tf_mtml.train.preemption import PreemptionWatcher, TrainingPreempted


class Task(Protocol):
    """What the loop needs from an experiment's task family (see `tf_mtml.tasks`).

    `build_inputs` may also take `start_step: int` (its training stream from that step on,
    in O(1)); a resumed distributed run then starts there instead of skipping batches.
    """

    def build_model(self) -> keras.Model: ...

    def build_inputs(self, training: bool,
                     input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        ...

    def train_step(self, inputs, model: keras.Model, optimizer: keras.optimizers.Optimizer,
                   loss_metric: keras.metrics.Metric) -> None: ...

    def validation_step(self, inputs, model: keras.Model,
                        loss_metric: keras.metrics.Metric) -> None: ...


def build_optimizer(config: OptimizerConfig, mixed_float16: bool = False,
                    guard: NonFiniteGuard | None = None):
    """A Keras optimizer from its config.

    With `guard`, the optimizer skips (and records in `guard`) every step whose gradients are
    not finite. For float16 it is wrapped in a `LossScaleOptimizer`, which already skips such
    steps (they are how it finds its loss scale), so `guard` is not used there.
    """
    classes = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
               "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}
    learning_rate = config.learning_rate
    if config.decay_steps:
        learning_rate = keras.optimizers.schedules.ExponentialDecay(
            config.learning_rate, config.decay_steps, config.decay_rate, staircase=True)
    kwargs = {"learning_rate": learning_rate, "clipnorm": config.clipnorm}
    if mixed_float16:
        return keras.optimizers.LossScaleOptimizer(classes[config.name](**kwargs))
    if guard is not None:
        return build_guarded_optimizer(classes[config.name], guard, **kwargs)
    return classes[config.name](**kwargs)


def metric_results(metrics: list[keras.metrics.Metric]) -> dict[str, float]:
    """Flattens metric results (scalars or dicts of scalars) into `{name: float}`."""
    results: dict[str, float] = {}
    for metric in metrics:
        value = metric.result()
        if isinstance(value, dict):
            results.update({k: float(v) for k, v in value.items()})
        else:
            results[metric.name] = float(value)
    return results


class Trainer:
    """Trains and evaluates a `Task` under a `tf.distribute` strategy.

    Args:
        task: The experiment's task (model, inputs, per-replica steps).
        strategy: Any `tf.distribute.Strategy`; model, optimizer and metrics are created in
            its scope, and the optimizer is built before the first compiled step.
        config: Steps, intervals and the optimizer.
        model_dir: Checkpoints go here, TensorBoard logs under `train/` and `eval/`.
        mixed_float16: Wrap the optimizer in a `LossScaleOptimizer`.
    """

    def __init__(self, task: Task, strategy: tf.distribute.Strategy, config: TrainerConfig,
                 model_dir: str, mixed_float16: bool = False):
        self.task, self.strategy, self.config, self.model_dir = task, strategy, config, model_dir
        with strategy.scope():
            self.model = task.build_model()
            self.global_step = tf.Variable(
                0, dtype=tf.int64, trainable=False, name="global_step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            # The step at which the current input stream started (a schedule starts one per
            # day): a resumed run skips `global_step - input_start_step` steps of it.
            self.input_start_step = tf.Variable(
                0, dtype=tf.int64, trainable=False, name="input_start_step",
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self.guard = NonFiniteGuard(config.nan_policy, self.global_step)
            self.optimizer = build_optimizer(config.optimizer, mixed_float16, self.guard)
            self.optimizer.build(self.model.trainable_variables)
            self.loss_metric = keras.metrics.Mean(name="loss")
        self.checkpoint = tf.train.Checkpoint(**self._checkpointed())
        # The chief of a multi-worker cluster (always True otherwise), as Keras' callbacks.
        self.is_chief = strategy.extended.should_checkpoint
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, model_dir if self.is_chief else _worker_dir(model_dir, strategy),
            max_to_keep=config.max_to_keep if self.is_chief else 1)
        self.preemption = PreemptionWatcher()
        self._train_loop_fn = tf.function(self._train_loop)
        self._eval_step_fn = tf.function(self._eval_step)
        self._writers: dict[str, tf.summary.SummaryWriter] = {}
        self._iterator = None
        self._fresh_input = False

    # ------------------------------------------------------------------------ Orbit shape
    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_metric, *self.model.metrics]

    def train_loop_begin(self) -> None:
        for metric in self.metrics:
            metric.reset_state()

    def train_step(self, iterator) -> None:
        self.strategy.run(self.task.train_step,
                          args=(next(iterator), self.model, self.optimizer, self.loss_metric))
        self.global_step.assign_add(1)

    def _train_loop(self, iterator, num_steps) -> None:
        for _ in tf.range(num_steps):
            self.train_step(iterator)
            if self.guard.should_stop():  # nan_policy=stop: nothing runs after a bad step
                break

    def train_loop_end(self) -> dict[str, float]:
        return metric_results(self.metrics)

    def _eval_step(self, inputs) -> None:
        self.strategy.run(self.task.validation_step, args=(inputs, self.model, self.loss_metric))

    def _checkpointed(self) -> dict:
        """What every checkpoint holds, besides the input position.

        `model_variables` lists every model variable again: Keras' `SeedGenerator` states
        (expert dropout, dropout) are model variables that TF's object graph does not reach
        from the model, so without it a resumed run would restart their random streams. A
        variable reachable twice is stored once.
        """
        return {"model": self.model, "optimizer": self.optimizer,
                "global_step": self.global_step, "input_start_step": self.input_start_step,
                "model_variables": list(self.model.variables)}

    # ------------------------------------------------------------------------ public API
    @property
    def step(self) -> int:
        return int(self.global_step.numpy())

    @property
    def train_tracing_count(self) -> int:
        """Times the compiled training loop was traced (1 for a whole run)."""
        return self._train_loop_fn.experimental_get_tracing_count()

    @property
    def latest_checkpoint(self) -> str | None:
        """The latest checkpoint in `model_dir` (the chief's, which every worker restores)."""
        return tf.train.latest_checkpoint(self.model_dir)

    def restore(self) -> int:
        """Restores the latest checkpoint in `model_dir`, if any; returns the step.

        When the input pipeline no longer matches the checkpointed iterator (its definition
        changed between runs), the model, optimizer and step are restored and the input
        stream starts over, with a warning.
        """
        path = self.latest_checkpoint
        if not path:
            return self.step
        try:
            if self._iterator is None:
                # Evaluation, export, or a schedule about to read new inputs: everything but
                # the input position. A separate root object on purpose: restoring through
                # `self.checkpoint` would leave the checkpointed iterator pending there, and
                # TF would silently apply its position to the next iterator attached (another
                # day's stream, which then skipped batches).
                tf.train.Checkpoint(**self._checkpointed()).restore(path).expect_partial()
            else:
                self.checkpoint.restore(path)
        except tf.errors.NotFoundError as e:
            if self._iterator is None or "iterator" not in str(e):
                raise
            logging.warning(
                "The input pipeline differs from the one checkpointed in %s, so its position "
                "cannot be restored; the model, optimizer and step are, and the input stream "
                "starts from its beginning.", path)
            tf.train.Checkpoint(**self._checkpointed()).restore(path).expect_partial()
            # The failed deserialization cancelled the iterator: start a fresh one.
            self.reset_train_iterator()
            self.input_start_step.assign(self.step)
            self._train_iterator()
        logging.info("Restored %s (step %d).", path, self.step)
        return self.step

    def train(self, train_steps: int, eval_fn: Callable[[], dict] | None = None) -> dict:
        """Trains until the global step reaches `train_steps`; resumes from a checkpoint.

        Raises:
            TrainingPreempted: After checkpointing, when a termination signal (SIGTERM) arrived
                (on any worker); the same call in a new process resumes from that checkpoint.
            FloatingPointError: Under `trainer.nan_policy=stop`, at the first step whose loss
                or gradients are not finite (named with the tasks concerned); nothing from that
                step on is checkpointed.
        """
        if self._fresh_input:
            self.input_start_step.assign(self.step)
            iterator = self._train_iterator()
        else:
            if self.is_chief:
                _remove_partial_checkpoints(self.model_dir)
            iterator = self._resumed_train_iterator()
        self._fresh_input = False
        progbar = keras.utils.Progbar(train_steps, stateful_metrics=None) \
            if _interactive() and self.is_chief else None
        logs: dict[str, float] = {}
        with self.preemption:
            while self.step < train_steps:
                num_steps = min(self.config.steps_per_loop, train_steps - self.step)
                self.train_loop_begin()
                self._train_loop_fn(iterator, tf.constant(num_steps, tf.int32))
                logs = self.train_loop_end()
                self._check_finite(logs)
                hook = getattr(self.task, "after_train_loop", None)
                if hook is not None:  # e.g. warnings about polarised or unused experts
                    hook(logs)
                self.write_summaries("train", logs)
                if progbar is not None:
                    progbar.update(self.step, values=[(k, v) for k, v in logs.items()
                                                      if "/" not in k or k.endswith("loss")])
                else:
                    logging.info("step %d/%d: %s", self.step, train_steps, _format(logs))
                if self.step < train_steps and self.preemption.any_worker_received(
                        self.strategy):
                    raise TrainingPreempted(self.step, self.save())
                if self.step % self.config.checkpoint_interval == 0 or self.step >= train_steps:
                    self.save()
                if eval_fn is not None and (self.step % self.config.validation_interval == 0
                                            or self.step >= train_steps):
                    eval_fn()
        return logs

    def reset_train_iterator(self) -> None:
        """Makes the next `train` call read `task.build_inputs` afresh, from its beginning.

        For tasks whose training inputs change between `train` calls (a schedule that trains
        on day t, then on day t + 1): the position of the previous stream is neither kept nor
        restored into the new one, and that `train` call continues from the weights in memory
        without restoring the checkpoint (the caller restores once, before its schedule).
        """
        self._iterator = None
        self._fresh_input = True
        if hasattr(self.checkpoint, "train_iterator"):
            del self.checkpoint.train_iterator

    def _train_dataset(self, skip_steps: int = 0):
        """The distributed training dataset, `skip_steps` into its stream.

        With the default strategy this is a `tf.data.Dataset`, whose iterator is checkpointed
        with the model (its position is restored exactly and cheaply). A distributed dataset
        (`MirroredStrategy`, multi-worker, TPU) has an iterator that cannot be checkpointed;
        its position is restored by skipping (`_resumed_train_iterator`).
        """
        # Per-epoch shuffles draw from fixed seeds (seed + epoch), which tf.data reports as
        # external state; their position is saved all the same, and the resume test
        # (tests/train/test_loop.py) checks that a resumed run equals an uninterrupted one.
        options = tf.data.Options()
        options.experimental_external_state_policy = (
            tf.data.experimental.ExternalStatePolicy.IGNORE)

        def dataset_fn(ctx):
            if skip_steps and _accepts_start_step(self.task.build_inputs):
                # The task starts its stream at a step directly (indexed episodes).
                return self.task.build_inputs(True, ctx, start_step=skip_steps) \
                    .with_options(options)
            dataset = self.task.build_inputs(True, ctx).with_options(options)
            if skip_steps:
                # Each pipeline yields one batch per local replica and step.
                dataset = dataset.skip(
                    skip_steps * (ctx.num_replicas_in_sync // ctx.num_input_pipelines))
            return dataset

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    def _train_iterator(self, dataset=None):
        """The training iterator, created once (from `dataset` if given) and reused."""
        if self._iterator is None:
            dataset = self._train_dataset() if dataset is None else dataset
            self._iterator = iter(dataset)
            if isinstance(dataset, tf.data.Dataset):  # a checkpointable tf.data iterator
                self.checkpoint.train_iterator = self._iterator
        return self._iterator

    def _resumed_train_iterator(self):
        """Restores the latest checkpoint and returns the iterator at its input position.

        A `tf.data` iterator gets its saved state when the checkpoint holds one. Otherwise
        (a distributed iterator, or a checkpoint written by a distributed run) the model,
        optimizer and step are restored and a new iterator skips the `step -
        input_start_step` steps already trained on this stream: every task's stream is the
        same each time it is built (seeded), so skipping reproduces the position exactly. A
        task whose `build_inputs` takes `start_step` starts there directly (meta-learning:
        O(1)); others re-read the skipped batches (`Dataset.skip` computes them).
        """
        if self._iterator is not None:
            self._iterator = None  # a second `train` call: back to the checkpointed position
            if hasattr(self.checkpoint, "train_iterator"):
                del self.checkpoint.train_iterator
        path = self.latest_checkpoint
        dataset = self._train_dataset()
        if isinstance(dataset, tf.data.Dataset) and (path is None or any(
                name.startswith("train_iterator/") for name, _ in tf.train.list_variables(path))):
            self._train_iterator(dataset)
            self.restore()
            return self._iterator  # a changed pipeline makes `restore` start a fresh one
        self.restore()
        skip = self.step - int(self.input_start_step.numpy())
        if skip:
            logging.info("Skipping the %d steps of input already trained on.", skip)
        return self._train_iterator(self._train_dataset(skip) if skip else dataset)

    def evaluate(self, steps: int = -1) -> dict[str, float]:
        """Evaluates on the task's evaluation inputs; writes eval summaries.

        A task whose evaluation is not a sum over batches (a linear probe fitted on frozen
        embeddings, say) defines `evaluate_model(model, strategy) -> {name: float}` instead.
        """
        if hasattr(self.task, "evaluate_model"):
            results = dict(self.task.evaluate_model(self.model, self.strategy))
        else:
            for metric in self.metrics:
                metric.reset_state()
            dataset = self.strategy.distribute_datasets_from_function(
                lambda ctx: self.task.build_inputs(False, ctx))
            for i, inputs in enumerate(dataset):
                if 0 <= steps <= i:
                    break
                self._eval_step_fn(inputs)
            results = {k: v for k, v in metric_results(self.metrics).items()
                       if not k.startswith(("gate/", "diagnostics/"))}
        self.write_summaries("eval", results)
        logging.info("eval at step %d: %s", self.step, _format(results))
        return results

    def save(self) -> str:
        """Checkpoints, after checking that every variable is finite; returns the path.

        The checkpoint's files are complete before the `checkpoint` index file names them
        (TF writes them first, then replaces the index atomically), so a process killed at
        any moment leaves the previous checkpoint restorable.
        """
        bad = [v.path for v in self.model.variables
               if not np.all(np.isfinite(keras.ops.convert_to_numpy(v)))]
        if bad:
            raise FloatingPointError(
                f"Refusing to checkpoint step {self.step}: non-finite values in {bad[:5]}. "
                f"The last good checkpoint ({self.latest_checkpoint}) is kept. Lower the "
                "learning rate, set trainer.optimizer.clipnorm, or check the inputs (a "
                "non-finite input batch poisons BatchNorm's moving statistics, which skipping "
                "the step cannot undo)."
            )
        path = self.manager.save(checkpoint_number=self.step)
        logging.info("Saved checkpoint %s.", path)
        return path

    def write_summaries(self, name: str, values: dict[str, float]) -> None:
        """Writes `values` as scalars under `model_dir/<name>/` (the chief only)."""
        if not self.is_chief:
            return
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(os.path.join(self.model_dir, name))
        with self._writers[name].as_default(step=self.step):
            for key, value in values.items():
                tf.summary.scalar(key, value)
            if name == "train":
                weighting = getattr(self.model, "weighting", None)
                for key, value in getattr(weighting, "effective_weights", dict)().items():
                    tf.summary.scalar(f"{key}/loss_weight", value)
        self._writers[name].flush()

    def _check_finite(self, logs: dict[str, float]) -> None:
        """Applies `trainer.nan_policy` to the loop that just ran (see `NonFiniteGuard`)."""
        bad_losses = {k: v for k, v in logs.items()
                      if k.endswith("loss") and not math.isfinite(v)}
        bad_steps = int(self.guard.bad_steps.numpy())
        last_bad = int(self.guard.last_bad_step.numpy())
        self.guard.reset()
        tasks = sorted({k.rsplit("/", 1)[0] for k in bad_losses if "/" in k})
        if tasks:
            where = f"tasks with a non-finite loss in this loop: {tasks}"
        else:
            where = ("the loss" if bad_losses else "the gradients only") + " of this loop"
        if bad_steps and self.guard.policy == "skip":
            logging.warning(
                "Skipped %d step(s) with non-finite gradients, the last at step %d (%s); their "
                "updates were not applied (trainer.nan_policy=skip).", bad_steps, last_bad, where)
            return
        if bad_steps or bad_losses:
            step = last_bad if bad_steps else self.step
            raise FloatingPointError(
                f"Non-finite loss or gradients at step {step} ({where}). The update was not "
                f"applied and nothing was checkpointed; the last good checkpoint "
                f"({self.latest_checkpoint}) is kept. Lower the learning rate, set "
                "trainer.optimizer.clipnorm, check the labels of the tasks named above, or set "
                "trainer.nan_policy=skip to skip such steps."
            )


def _accepts_start_step(build_inputs) -> bool:
    return "start_step" in inspect.signature(build_inputs).parameters


def _remove_partial_checkpoints(model_dir: str) -> None:
    """Deletes the shard directories of checkpoint writes that a killed process left behind.

    TF writes a checkpoint's shards to `<prefix>_temp/` and merges them into `<prefix>.index`
    and `<prefix>.data-*` before the `checkpoint` file names it; a leftover `_temp` directory
    is never referenced by any checkpoint.
    """
    for path in tf.io.gfile.glob(os.path.join(model_dir, "ckpt-*_temp")):
        logging.info("Removing %s, left by an interrupted checkpoint write.", path)
        tf.io.gfile.rmtree(path)


def _worker_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
    resolver = strategy.cluster_resolver
    return os.path.join(model_dir, "workers", f"{resolver.task_type}_{resolver.task_id}")


def _interactive() -> bool:
    return sys.stdout.isatty()


def _format(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(values.items()) if not k.startswith("gate/"))
