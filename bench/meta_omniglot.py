"""Few-shot Omniglot accuracy within a wall-clock training budget: ProtoNet and MAML.

Published (Omniglot, 1-shot): Prototypical Networks 98.8% 5-way and 96.0% 20-way (Snell et
al. 2017, https://arxiv.org/abs/1703.05175, Table 1); MAML 98.7% 5-way (Finn et al. 2017,
https://arxiv.org/abs/1703.03400, Table 1). The protocol is the registered experiments'
(`protonet_omniglot`, `maml_omniglot`): the Vinyals et al. split, 28x28 images, rotations as
new classes, Conv-4, mean meta-test accuracy with a 95% confidence interval over 1000 episodes
of 15 queries per class.

The run trains the registered experiment with the project's `Trainer` for `--minutes` of
training wall-clock time (loops of `--steps_per_loop` steps; it stops after the loop that
spends the budget, or at the experiment's `train_steps`). It records a learning curve: the
accuracy on `--curve_episodes` meta-validation episodes (the val split: meta-test classes are
never seen before training ends) at the start, every `--eval_every_minutes` of training and at
the end. Then the meta-test accuracy over `--eval_episodes` episodes: 5-way and 20-way 1-shot
for ProtoNet (one model, trained 60-way), 5-way 1-shot after 3 inner steps for MAML.

ProtoNet is evaluated from cached embeddings. In inference mode its encoder embeds each image
on its own (BatchNorm uses its moving statistics), so the bench embeds every image of the
split once in each of its 4 rotations (33,840 test images) and looks the embeddings up, where
running the network on 1000 5-way and 1000 20-way episodes embeds 400,000 images. The
episodes are the task's own: its pipeline runs on images replaced by their index, and
`PrototypicalNetwork` computes the logits from the looked-up embeddings.

Command (from the repository root):
    .venv/bin/python -m bench.meta_omniglot --algorithm=protonet [--minutes=5] \\
        [--eval_every_minutes=2] [--eval_episodes=1000] [--curve_episodes=200] [--data_dir=...]
    .venv/bin/python -m bench.meta_omniglot --algorithm=maml --minutes=60 --eval_every_minutes=5

Output: one JSON object on stdout (logs go to stderr). Runtime on 2 shared CPU cores (load
average 8-10) with the defaults: about 6.5 minutes for ProtoNet and 9 for MAML (`--minutes=3`:
4 minutes for ProtoNet); the published budget is `--minutes=60`.

Measured there (TF 2.21): ProtoNet trains 0.8 episodes/s, so 3 minutes are 145 episodes of
the experiment's 20,000: 70.3% +- 0.7 (5-way) and 49.1% +- 0.4 (20-way). Short runs are held back
by BatchNorm: in inference mode it normalises with moving statistics (momentum 0.99) that lag
the weights by a few hundred steps; after 100 steps the same network scores 93% on
meta-validation with batch statistics and 73% with moving ones. MAML (second order, 32
episodes per step) trains 0.13 steps/s: 6 minutes are 50 of the paper's 60,000 steps, 40.9%
+- 0.8.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from bench._common import machine_info
from tf_mtml.configs import experiments  # noqa: F401  (registers every experiment)
from tf_mtml.configs.experiment import ExperimentConfig
from tf_mtml.configs.registry import get_experiment
from tf_mtml.data.data_dir import resolve_data_dir
from tf_mtml.data.episodes import NUM_ROTATIONS
from tf_mtml.data.labelled import ClassIndexedData
from tf_mtml.meta import MAML, PrototypicalNetwork
from tf_mtml.meta.base import QUERY_X, QUERY_Y, SUPPORT_X, SUPPORT_Y, MetaLearner, episode_scores
from tf_mtml.meta.metrics import MeanWithConfidence
from tf_mtml.tasks.meta import MetaLearningTask
from tf_mtml.train.loop import Trainer
from tf_mtml.train.run import build_trainer

EXPERIMENTS = {"protonet": "protonet_omniglot", "maml": "maml_omniglot"}
# Published meta-test accuracy, 1-shot, by number of ways.
PUBLISHED = {"protonet": {5: 0.988, 20: 0.960}, "maml": {5: 0.987}}
PAPERS = {"protonet": "Snell et al. 2017, https://arxiv.org/abs/1703.05175, Table 1",
          "maml": "Finn et al. 2017, https://arxiv.org/abs/1703.03400, Table 1"}

FLAGS = flags.FLAGS


class BudgetSpent(Exception):
    """Raised between training loops to stop `Trainer.train` once the budget is spent."""


def experiment_config(algorithm: str, data_dir: str = "", steps_per_loop: int = 5,
                      params_override: str = "") -> ExperimentConfig:
    """The registered experiment, evaluated (or stopped) after every loop of training."""
    config = get_experiment(EXPERIMENTS[algorithm])
    train_steps = config.trainer.train_steps
    config.override({"task": {"data": {"data_dir": data_dir}},
                     # Checkpoints only at the experiment's last step: the bench keeps none.
                     "trainer": {"steps_per_loop": steps_per_loop,
                                 "validation_interval": steps_per_loop,
                                 "checkpoint_interval": steps_per_loop * math.ceil(
                                     train_steps / steps_per_loop)}})
    config.override_from_string(params_override)
    config.validate()
    return config


def evaluation_task(config: ExperimentConfig, split: str, num_ways: int,
                    num_episodes: int) -> MetaLearningTask:
    """The experiment's task, evaluating `num_ways`-way on `num_episodes` episodes of `split`."""
    task_config = copy.deepcopy(config.task)
    task_config.override({"data": {"eval_split": split, "eval_num_ways": num_ways,
                                   "eval_episodes": num_episodes}})
    task_config.validate()
    return MetaLearningTask(task_config, seed=config.runtime.seed)


def query_predictions(model: MetaLearner, episode: dict) -> tf.Tensor:
    """Query predictions of `model` for a meta-batch of episodes, in inference mode.

    MAML adapts episode by episode (`adapt_and_predict` under `tf.map_fn`): on Conv-4 that
    is twice as fast as its vectorized `call`, where pfor runs the gradient of each convolution
    filter in a while loop, and it gives the same predictions.
    """
    if isinstance(model, MAML):
        return tf.map_fn(lambda e: model.adapt_and_predict(*e),
                         (episode[SUPPORT_X], episode[SUPPORT_Y], episode[QUERY_X]),
                         fn_output_signature=tf.float32)
    return model(episode, training=False)


def episode_scorer(model: MetaLearner) -> Callable[[dict], tf.Tensor]:
    """A compiled `episode -> (B,)` query accuracy of `model` in inference mode."""
    return tf.function(lambda episode: episode_scores(
        model.problem, episode[QUERY_Y], query_predictions(model, episode)))


def mean_accuracy(scorer: Callable[[dict], tf.Tensor], dataset: tf.data.Dataset) -> dict:
    """Mean per-episode accuracy over `dataset`, its 95% half-width and the episode count."""
    metric = MeanWithConfidence(name="accuracy")
    for episode in dataset:
        metric.update_state(scorer(episode))
    result = metric.result()
    return {"accuracy": float(result["accuracy"]), "ci95": float(result["accuracy_ci95"]),
            "episodes": int(metric.count.numpy())}


def index_images(num_examples: int) -> np.ndarray:
    """`(M, 2, 2, 1)` float32 images; image `m` holds `4m..4m+3` clockwise from the top left.

    A quarter turn shifts the clockwise order, so after the episode pipeline rotates an index
    image its top-left pixel `4m + slot` names the image `m` and the rotation (`slot`).
    """
    base = 4 * np.arange(num_examples, dtype=np.float32)[:, None, None]
    return (base + np.array([[0, 1], [3, 2]], np.float32))[..., None]


class IndexedEpisodesTask(MetaLearningTask):
    """A `MetaLearningTask` whose images are replaced by `index_images`: the same episodes.

    Episode sampling reads only labels and class sizes, so each episode picks the same
    examples and rotations as the task on the real images (same config, same seed).
    """

    def __init__(self, config, data: ClassIndexedData, seed: int = 0):
        super().__init__(config, seed=seed)
        self._indexed = ClassIndexedData(index_images(len(data.examples)), data.labels,
                                         data.class_names)

    def classes(self, split: str) -> ClassIndexedData:
        return self._indexed


class EmbeddingLookup(keras.layers.Layer):
    """Maps index images (`index_images`, rotated) to rows of an embedding table `(batch, d)`.

    Args:
        table: The initial `(4M, d)` table (see `embedding_table`); `table` is a non-trainable
            variable, assign it to follow a model in training without retracing.
    """

    def __init__(self, table: np.ndarray, **kwargs):
        super().__init__(**kwargs)
        self.table = self.add_weight(shape=table.shape, initializer=lambda shape, dtype: table,
                                     trainable=False, name="table")

    def call(self, images):
        return tf.gather(self.table, tf.cast(images[:, 0, 0, 0], "int32"))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.table.shape[1])


def embedding_table(embed: Callable[[tf.Tensor], tf.Tensor], images: np.ndarray,
                    batch_size: int = 1024) -> np.ndarray:
    """`(4M, d)` embeddings: row `4m + slot` is `embed` of image `m` in the rotation of `slot`."""
    template = index_images(1)[0]
    slots = []
    for turns in range(NUM_ROTATIONS):
        rotated = tf.data.Dataset.from_tensor_slices(images).batch(batch_size).map(
            lambda x, k=turns: tf.image.rot90(x, k))
        slot = int(tf.image.rot90(template, turns)[0, 0, 0])
        slots.append((slot, np.concatenate([embed(x).numpy() for x in rotated])))
    table = np.zeros((len(images), NUM_ROTATIONS, slots[0][1].shape[1]), np.float32)
    for slot, embeddings in slots:
        table[:, slot] = embeddings
    return table.reshape(len(images) * NUM_ROTATIONS, -1)


class Evaluator:
    """Accuracy of a meta-learner on the experiment's episodes of a split, by ways.

    ProtoNet runs from cached embeddings (see the module docstring), other learners on each
    episode. Tasks, data and compiled functions are kept, so repeated evaluations (the
    curve) trace nothing anew.

    Args:
        model: The meta-learner being trained.
        config: The experiment.
    """

    def __init__(self, model: MetaLearner, config: ExperimentConfig):
        self.model, self.config = model, config
        self.cached = isinstance(model, PrototypicalNetwork)
        self._scorer = episode_scorer(model)
        self._embed = tf.function(lambda x: model.embed(x, training=False))
        self._data: dict[str, ClassIndexedData] = {}
        self._tasks: dict[tuple, MetaLearningTask] = {}
        self._lookups: dict[str, tuple[EmbeddingLookup, Callable]] = {}

    def _split_data(self, split: str) -> ClassIndexedData:
        if split not in self._data:
            self._data[split] = MetaLearningTask(self.config.task).classes(split)
        return self._data[split]

    def _task(self, split: str, num_ways: int, num_episodes: int) -> MetaLearningTask:
        key = (split, num_ways, num_episodes)
        if key not in self._tasks:
            task = evaluation_task(self.config, split, num_ways, num_episodes)
            if self.cached:
                task = IndexedEpisodesTask(task.config, self._split_data(split), task.seed)
            self._tasks[key] = task
        return self._tasks[key]

    def _cached_scorer(self, split: str) -> Callable[[dict], tf.Tensor]:
        """The scorer of a ProtoNet that reads the embeddings of the model as it is now."""
        table = embedding_table(self._embed, self._split_data(split).examples)
        if split in self._lookups:
            self._lookups[split][0].table.assign(table)
        else:
            lookup = EmbeddingLookup(table)
            self._lookups[split] = (lookup, episode_scorer(
                PrototypicalNetwork(lookup, distance=self.model.distance)))
        return self._lookups[split][1]

    def __call__(self, split: str, ways: tuple[int, ...], num_episodes: int) -> dict[int, dict]:
        scorer = self._cached_scorer(split) if self.cached else self._scorer
        return {n: mean_accuracy(scorer, self._task(split, n, num_episodes)
                                 .build_inputs(training=False)) for n in ways}


def train_with_budget(trainer: Trainer, train_steps: int, minutes: float,
                      eval_every_minutes: float, validate: Callable[[], dict]) -> dict:
    """Trains until `minutes` of training time are spent; returns the run and its curve.

    `validate()` runs before training, after the loop that crosses each multiple of
    `eval_every_minutes` and after the last loop; its time is not training time.
    """
    clock = {"train_s": 0.0, "eval_s": 0.0, "next_eval_s": eval_every_minutes * 60}
    curve = []

    def record(logs: dict) -> None:
        start = time.perf_counter()
        point = {"step": trainer.step, "train_minutes": clock["train_s"] / 60,
                 **{f"val_{k}": v for k, v in validate().items()},
                 "train_loss": logs.get("loss"), "train_accuracy": logs.get("accuracy")}
        clock["eval_s"] += time.perf_counter() - start
        curve.append(point)

    def between_loops() -> None:
        clock["train_s"] += time.perf_counter() - clock["resumed"]
        spent = clock["train_s"] >= minutes * 60 or trainer.step >= train_steps
        if spent or clock["train_s"] >= clock["next_eval_s"]:
            record(trainer.train_loop_end())
            while clock["next_eval_s"] <= clock["train_s"]:
                clock["next_eval_s"] += eval_every_minutes * 60
        if spent:
            raise BudgetSpent
        clock["resumed"] = time.perf_counter()

    record({})
    clock["resumed"] = time.perf_counter()
    with contextlib.suppress(BudgetSpent):
        trainer.train(train_steps, eval_fn=between_loops)
    return {"steps": trainer.step, "train_wall_s": clock["train_s"],
            "steps_per_s": trainer.step / clock["train_s"],
            "stopped_by": "train_steps" if trainer.step >= train_steps else "budget",
            "curve_eval_wall_s": clock["eval_s"], "curve": curve}


def _check_arguments(algorithm, minutes, eval_every_minutes, eval_episodes, curve_episodes,
                     steps_per_loop) -> None:
    if algorithm not in EXPERIMENTS:
        raise ValueError(f"Received an invalid value for `algorithm`, expected one of "
                         f"{sorted(EXPERIMENTS)}. Received: algorithm={algorithm!r}")
    for name, value in (("minutes", minutes), ("eval_every_minutes", eval_every_minutes)):
        if isinstance(value, bool) or not (isinstance(value, int | float)
                                           and math.isfinite(value) and value > 0):
            raise ValueError(f"Received an invalid value for `{name}`, expected a positive "
                             f"number of minutes. Received: {name}={value!r}")
    for name, value in (("eval_episodes", eval_episodes), ("curve_episodes", curve_episodes),
                        ("steps_per_loop", steps_per_loop)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Received an invalid value for `{name}`, expected a positive "
                             f"integer. Received: {name}={value!r}")


def run_benchmark(algorithm: str, minutes: float, eval_every_minutes: float,
                  eval_episodes: int = 1000, curve_episodes: int = 200, data_dir: str = "",
                  steps_per_loop: int = 5, params_override: str = "") -> dict:
    """Trains `algorithm` on Omniglot for `minutes`, then evaluates; returns the report."""
    _check_arguments(algorithm, minutes, eval_every_minutes, eval_episodes, curve_episodes,
                     steps_per_loop)
    data_dir = resolve_data_dir(data_dir or None)
    info = machine_info()
    start = time.perf_counter()
    config = experiment_config(algorithm, data_dir, steps_per_loop, params_override)
    ways = tuple(PUBLISHED[algorithm])
    keras.backend.clear_session()
    with tempfile.TemporaryDirectory() as model_dir:
        trainer = build_trainer(config, model_dir)
        evaluate = Evaluator(trainer.model, config)
        setup_s = time.perf_counter() - start
        run = train_with_budget(
            trainer, config.trainer.train_steps, minutes, eval_every_minutes,
            lambda: evaluate("val", ways[:1], curve_episodes)[ways[0]])
        test_start = time.perf_counter()
        results = evaluate(config.task.data.eval_split, ways, eval_episodes)
        test_s = time.perf_counter() - test_start
    data, model = config.task.data, config.task.model
    meta_test = {}
    for num_ways, result in results.items():
        published = PUBLISHED[algorithm][num_ways]
        meta_test[f"{num_ways}-way {data.eval_shots}-shot"] = {
            **result, "published": published,
            # Positive: below the published accuracy.
            "gap": published - result["accuracy"],
            "published_within_ci": abs(published - result["accuracy"]) <= result["ci95"]}
    return {
        "benchmark": "meta_omniglot", "algorithm": algorithm,
        "experiment": EXPERIMENTS[algorithm], "paper": PAPERS[algorithm],
        "protocol": {
            "train": f"{data.num_ways}-way {data.num_shots}-shot, {data.num_queries} queries per "
                     f"class, {data.meta_batch_size} episodes per step, split "
                     f"{data.train_split!r}, rotations={data.rotations}",
            "curve": f"{ways[0]}-way {data.eval_shots}-shot, {data.eval_queries} queries per "
                     f"class, {curve_episodes} episodes of the 'val' split",
            "meta_test": f"{data.eval_shots}-shot, {data.eval_queries} queries per class, "
                         f"split {data.eval_split!r}, ways {list(ways)}"
                         + (f", {model.eval_inner_steps or model.inner_steps} inner steps of lr "
                            f"{model.inner_lr}" if algorithm == "maml" else ""),
            "ci": "95% normal interval of the mean over episodes (1.96 std / sqrt(n))"},
        "config": {"minutes": minutes, "eval_every_minutes": eval_every_minutes,
                   "eval_episodes": eval_episodes, "curve_episodes": curve_episodes,
                   "steps_per_loop": steps_per_loop, "params_override": params_override,
                   "experiment": config.as_dict()},
        "training": {key: value for key, value in run.items() if key != "curve"},
        "curve": run["curve"],
        "meta_test": meta_test,
        "wall_s": {"setup": setup_s, "train": run["train_wall_s"],
                   "curve_eval": run["curve_eval_wall_s"], "meta_test": test_s,
                   "total": time.perf_counter() - start},
        "machine": {**info, "load_average_at_end": os.getloadavg()},
    }


def define_flags() -> None:
    flags.DEFINE_enum("algorithm", "protonet", sorted(EXPERIMENTS), "The meta-learner.")
    flags.DEFINE_float("minutes", 5.0, "Training budget in wall-clock minutes (evaluations "
                       "excluded); 60 for the published budget.")
    flags.DEFINE_float("eval_every_minutes", 2.0, "Training minutes between curve points.")
    flags.DEFINE_integer("eval_episodes", 1000, "Meta-test episodes (1000 in the papers).")
    flags.DEFINE_integer("curve_episodes", 200, "Meta-validation episodes per curve point.")
    flags.DEFINE_integer("steps_per_loop", 5, "Training steps between budget checks.")
    flags.DEFINE_string("data_dir", "", "Folder holding omniglot/; default $TF_MTML_DATA_DIR, "
                        "else ../shared/data.")
    flags.DEFINE_string("params_override", "", "Dotted config overrides, e.g. "
                        "'task.model.filters=32,runtime.seed=1'.")


def main(argv) -> None:
    del argv
    # The trainer draws a progress bar on an interactive stdout, which must carry only JSON.
    with contextlib.redirect_stdout(sys.stderr):
        report = run_benchmark(FLAGS.algorithm, FLAGS.minutes, FLAGS.eval_every_minutes,
                               FLAGS.eval_episodes, FLAGS.curve_episodes, FLAGS.data_dir,
                               FLAGS.steps_per_loop, FLAGS.params_override)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    define_flags()
    app.run(main)
