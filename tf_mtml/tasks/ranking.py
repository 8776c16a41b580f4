"""The ranking task family: YouTube-style multi-objective ranking trained day by day.

Zhao et al., "Recommending What Video to Watch Next: A Multitask Ranking System", RecSys
2019, https://doi.org/10.1145/3298689.3346997: an MMoE with expert dropout predicts
engagement (click, watch time) and satisfaction (like, rating) objectives; a shallow tower
on the display position absorbs selection bias in training and is left out at serving
(position 0); the ranking score is a weighted combination of the task predictions; the
model trains in temporal order on newly arriving data.

`run_schedule` trains on day `t`, evaluates on day `t + 1` (before training on it), and
continues from the same weights for `task.data.num_days` days, writing `day_{t+1}/<metric>`
to `model_dir/eval_results.json`. Data: `tf_mtml.data.ranking_synthetic`, whose ground
truth gives the NDCG its relevance.
"""

from __future__ import annotations

import json
import os
import re

import keras
import keras_rs
import numpy as np
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from tf_mtml.configs.ranking import RankingConfig
from tf_mtml.data._common import check_positive_int
from tf_mtml.data.multi_label import multi_label_dataset
from tf_mtml.data.ranking_synthetic import (
    POSITION,
    USER_FEATURES,
    VIDEO_AGE,
    VIDEO_FEATURES,
    RankingDay,
    weighted_sum,
)
from tf_mtml.data.sharding import shard_global_batches
from tf_mtml.layers.mmoe import MMoE
from tf_mtml.layers.multi_head import TaskTowers
from tf_mtml.models.multitask_model import MultiTaskModel
from tf_mtml.models.task_spec import as_task_specs
from tf_mtml.serving.export import SERVING_DEFAULT
from tf_mtml.serving.task_score import task_score_endpoint, task_score_examples
from tf_mtml.serving.validation import gate, same_rows_check
from tf_mtml.weighting.factory import get_weighting
from tf_mtml.weighting.train_step import multitask_train_step

RANKING_SCORE = "ranking_score"
SERVING_FEATURES = (USER_FEATURES, VIDEO_FEATURES, VIDEO_AGE)
_PREDICT_BATCH = 8192
_TASK_METRICS = {"accuracy": keras.metrics.BinaryAccuracy,
                 "mse": keras.metrics.MeanSquaredError, "mae": keras.metrics.MeanAbsoluteError}
_DAY_KEY = re.compile(r"day_(\d+)/")


def ndcg(relevance: np.ndarray, scores: np.ndarray, cutoffs: tuple[int, ...]) -> dict[str, float]:
    """`{"ndcg@k": value}`: mean NDCG@k over lists (`keras_rs.metrics.NDCG`).

    Args:
        relevance: `(num_lists, list_size)` graded relevance >= 0 (gain `2^rel - 1`).
        scores: `(num_lists, list_size)` ranking scores, higher first.
        cutoffs: The `k`s.

    Returns:
        One float per cut-off.
    """
    results = {}
    for k in cutoffs:
        metric = keras_rs.metrics.NDCG(k=k, name=f"ndcg@{k}", seed=0)
        metric.update_state(relevance, scores)
        results[metric.name] = float(metric.result())
    return results


class RankingTask:
    """Builds, trains day by day and evaluates a ranking `MultiTaskModel`.

    Args:
        config: The experiment's `task` section.
        seed: Seeds weight initialisation, expert dropout and shuffling (`runtime.seed`).
    """

    def __init__(self, config: RankingConfig, seed: int = 0):
        self.config = config
        self.seed = seed
        self.tasks = as_task_specs(config.tasks)
        self.problem = config.data.problem()
        self._days: dict[int, RankingDay] = {}
        # Outside `run_schedule`: the last training day, evaluated on the final day.
        self._train_day = config.data.num_days - 1

    # ------------------------------------------------------------------------------ data
    @property
    def train_day(self) -> int:
        """The day `build_inputs` serves; `evaluate_model` reads the day after it."""
        return self._train_day

    @train_day.setter
    def train_day(self, day: int) -> None:
        num_days = self.config.data.num_days
        if not 0 <= day < num_days:
            raise ValueError(
                f"Received train_day={day}, expected a training day in [0, {num_days - 1}] "
                f"(`task.data.num_days={num_days}`).")
        self._train_day = day

    @property
    def eval_day(self) -> int:
        return self.train_day + 1

    def day(self, day: int) -> RankingDay:
        """The impressions of `day` in `[0, num_days]`, generated once."""
        num_days = self.config.data.num_days
        if not 0 <= day <= num_days:
            raise ValueError(
                f"Received day={day}, expected a day in [0, {num_days}]: the schedule trains on "
                f"days 0..{num_days - 1} and evaluates on the day after each.")
        if day not in self._days:
            self._days[day] = self.problem.sample_day(day)
        return self._days[day]

    def build_inputs(self, training: bool,
                     input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        """Infinite per-replica batches of the impressions of `train_day` only."""
        if not training:
            raise ValueError("RankingTask evaluates whole request lists of the next day with "
                             "`evaluate_model`, not with evaluation batches.")
        features, labels = self.day(self.train_day).impressions()
        labels = {t.name: labels[t.name] for t in self.tasks}
        global_batch = self.config.data.global_batch_size
        dataset = multi_label_dataset(features, labels, batch_size=global_batch,
                                      seed=self.seed * 7919 + self.train_day * 131)
        # One global stream split by rows: every topology sees the batches one device would.
        return shard_global_batches(dataset, global_batch, input_context)

    # ----------------------------------------------------------------------------- model
    def build_network(self) -> keras.Model:
        """`{user_features, video_features, video_age, position} -> {task: raw output}`."""
        model, dim = self.config.model, self.config.data.latent_dim
        inputs = {USER_FEATURES: keras.Input((dim,), name=USER_FEATURES),
                  VIDEO_FEATURES: keras.Input((dim + 2,), name=VIDEO_FEATURES),
                  VIDEO_AGE: keras.Input((1,), name=VIDEO_AGE),
                  POSITION: keras.Input((), dtype="int32", name=POSITION)}
        x = keras.layers.Concatenate(name="features")([inputs[k] for k in SERVING_FEATURES])
        names = [t.name for t in self.tasks]
        mmoe = MMoE(num_experts=model.num_experts, expert_units=model.expert_units,
                    num_tasks=len(names), expert_dropout=model.expert_dropout,
                    task_names=names, seed=self.seed, name="mmoe")
        towers = TaskTowers({t.name: t.output_units for t in self.tasks},
                            tower_units=model.tower_units, name="towers")
        outputs = towers(mmoe(x))
        biased = list(model.position_bias_tasks)
        if biased:
            # The shallow tower: one learned logit per (position, task), float32 like the heads.
            shallow = keras.layers.Embedding(
                self.config.data.list_size, len(biased), embeddings_initializer="zeros",
                dtype="float32", name="position_tower")(inputs[POSITION])
            for i, name in enumerate(biased):
                outputs[name] = keras.layers.Add(dtype="float32", name=f"{name}_biased")(
                    [outputs[name], shallow[:, i:i + 1]])
        return keras.Model(inputs, outputs, name="ranking_network")

    def build_model(self) -> MultiTaskModel:
        keras.utils.set_random_seed(self.seed)
        weighting = get_weighting(self.config.model.weighting, self.tasks, seed=self.seed)
        model = MultiTaskModel(self.build_network(), self.tasks, weighting=weighting)
        if any(t.standardize for t in self.tasks):
            # Day 0 is the first training day: no later day leaks into the statistics.
            model.adapt_label_statistics(self.day(0).impressions()[1])
        return model

    # ----------------------------------------------------------------- per-replica steps
    def train_step(self, inputs, model: MultiTaskModel, optimizer, loss_metric) -> None:
        """One step under `model.weighting` (`tf_mtml.weighting.multitask_train_step`)."""
        x, y = inputs
        loss, y_pred = multitask_train_step(model, optimizer, x, y)
        model.update_task_metrics(y, y_pred)
        loss_metric.update_state(loss * tf.distribute.get_replica_context().num_replicas_in_sync)

    # -------------------------------------------------------------------------- evaluation
    def evaluate_model(self, model: MultiTaskModel, strategy=None) -> dict[str, float]:
        """Metrics of the model on every request of `eval_day`.

        `{task}/loss` and `loss` (the static-weighted sum), `{task}/{metric}` on the
        impressions that have the label (at their displayed positions), and `ndcg@{k}` of
        the served ranking score against the ground-truth utility of each request list.
        Runs on the host's default device: one day is small.
        """
        del strategy
        day = self.day(self.eval_day)
        features, labels = day.impressions()
        raw = _in_batches(lambda x: model(x, training=False), features)
        losses = model.task_losses({t.name: labels[t.name] for t in self.tasks}, raw)
        results = {f"{name}/loss": float(loss) for name, loss in losses.items()}
        results["loss"] = sum(t.weight * results[f"{t.name}/loss"] for t in self.tasks)
        predictions = {k: keras.ops.convert_to_numpy(v)
                       for k, v in model.postprocess(raw).items()}
        for task in self.tasks:
            known = np.isfinite(labels[task.name])
            for name in task.metric_names:
                if name == "auc":
                    # Every prediction of the day is in memory: the exact AUC, not Keras'
                    # bucketed estimate (0.03 off for a small model's narrow probabilities).
                    results[f"{task.name}/auc"] = float(roc_auc_score(
                        labels[task.name][known], predictions[task.name][known]))
                    continue
                metric = _TASK_METRICS[name]()
                metric.update_state(labels[task.name][known], predictions[task.name][known])
                results[f"{task.name}/{name}"] = float(metric.result())
        served = _in_batches(self.serve_fn(model), {k: features[k] for k in SERVING_FEATURES})
        scores = served[RANKING_SCORE].reshape(day.video_ids.shape)
        weights = self.config.model.score_weights
        results.update(ndcg(day.utility(weights), scores, self.config.ndcg_cutoffs))
        return results

    def steps_per_day(self, train_steps: int) -> int:
        num_days = self.config.data.num_days
        if train_steps < num_days or train_steps % num_days:
            raise ValueError(
                f"`trainer.train_steps={train_steps}` must be a positive multiple of "
                f"`task.data.num_days={num_days}`: every day gets the same share of the steps.")
        return train_steps // num_days

    def run_schedule(self, trainer, evaluate: bool = True) -> dict:
        """Trains on day `t`, evaluates on day `t + 1`, continues, for every training day.

        `trainer.config.train_steps` is split evenly over the days. After each day the
        results so far go to `model_dir/eval_results.json` (keys `day_{t+1}/<metric>`);
        after a restart, finished days are skipped and their results kept.

        Args:
            trainer: A `tf_mtml.train.loop.Trainer` built with this task.
            evaluate: Whether to evaluate after every day.

        Returns:
            `{"train": last training logs, "eval": per-day results}` (`eval` if evaluated).
        """
        # Imported here: `tf_mtml.train.run` imports the task factory, which imports this.
        from tf_mtml.train.run import EVAL_RESULTS_FILE, write_eval_results

        steps_per_day = self.steps_per_day(trainer.config.train_steps)
        trainer.restore()
        finished = trainer.step // steps_per_day
        results = _previous_results(os.path.join(trainer.model_dir, EVAL_RESULTS_FILE),
                                    last_day=finished) if evaluate else {}
        logs: dict[str, float] = {}
        for day in range(finished, self.config.data.num_days):
            self.train_day = day
            if day > finished or trainer.step % steps_per_day == 0:
                trainer.reset_train_iterator()  # day t's impressions, not the previous day's
            # Else a preempted run resumes inside this day: `train` restores the position of
            # this day's stream from the checkpoint, so the resumed day equals an unbroken one.
            logs = trainer.train((day + 1) * steps_per_day)
            if evaluate:
                day_results = trainer.evaluate()
                results.update({f"day_{self.eval_day}/{k}": v for k, v in day_results.items()})
                if trainer.is_chief:
                    write_eval_results(results, trainer.step, trainer.model_dir)
        return {"train": logs, "eval": results} if evaluate else {"train": logs}

    # ---------------------------------------------------------------------------- export
    def input_signature(self) -> dict[str, tf.TensorSpec]:
        dim = self.config.data.latent_dim
        return {USER_FEATURES: tf.TensorSpec((None, dim), tf.float32),
                VIDEO_FEATURES: tf.TensorSpec((None, dim + 2), tf.float32),
                VIDEO_AGE: tf.TensorSpec((None, 1), tf.float32)}

    def serve_fn(self, model: MultiTaskModel):
        """`serving_default`: every task's prediction and `ranking_score`, at position 0.

        Candidates are scored before they have a position, so the shallow tower gets
        position 0 (no position penalty): the predictions are the debiased ones. The three
        inputs must describe the same candidates (as many rows each).
        """
        weights = dict(self.config.model.score_weights)

        def serve(inputs):
            inputs = gate(inputs, [same_rows_check(SERVING_DEFAULT, inputs, SERVING_FEATURES)])
            inputs = {**inputs, POSITION: tf.zeros(tf.shape(inputs[VIDEO_AGE])[:1], tf.int32)}
            predictions = model.serve(inputs)
            return {**predictions, RANKING_SCORE: weighted_sum(predictions, weights)}

        return serve

    def extra_endpoints(self, model: MultiTaskModel) -> dict:
        """`task_score`: one task's debiased prediction per candidate (see `task_score`)."""
        return task_score_endpoint(self.serve_fn(model), self.input_signature(), self.tasks)

    def serving_examples(self, num: int) -> dict[str, dict[str, np.ndarray]]:
        """`{signature: inputs}` of the first `num` impressions of the evaluation day."""
        check_positive_int("num", num)
        features, _ = self.day(self.eval_day).impressions()
        inputs = {k: features[k][:num].astype(np.float32) for k in SERVING_FEATURES}
        return {SERVING_DEFAULT: inputs, **task_score_examples(inputs, self.tasks)}


def _in_batches(fn, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`fn` applied to slices of `_PREDICT_BATCH` rows; outputs concatenated as numpy."""
    size = len(next(iter(inputs.values())))
    chunks = [fn({k: v[i:i + _PREDICT_BATCH] for k, v in inputs.items()})
              for i in range(0, size, _PREDICT_BATCH)]
    return {k: np.concatenate([keras.ops.convert_to_numpy(c[k]) for c in chunks])
            for k in chunks[0]}


def _previous_results(path: str, last_day: int) -> dict[str, float]:
    """The `day_{d}/...` results of days `d <= last_day` from an earlier run, if any."""
    if last_day == 0 or not os.path.exists(path):
        return {}
    with open(path) as f:
        saved = json.load(f)
    return {k: v for k, v in saved.items()
            if (match := _DAY_KEY.match(k)) and int(match.group(1)) <= last_day}
