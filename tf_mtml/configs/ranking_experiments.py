"""Registered ranking experiments: the YouTube-style multi-objective ranker."""

from __future__ import annotations

from tf_mtml.configs.experiment import ExperimentConfig, OptimizerConfig, TrainerConfig
from tf_mtml.configs.ranking import RankingConfig
from tf_mtml.configs.registry import register_experiment


@register_experiment("youtube_ranking")
def youtube_ranking() -> ExperimentConfig:
    """MMoE ranker of engagement and satisfaction objectives, trained day by day.

    Zhao et al., "Recommending What Video to Watch Next: A Multitask Ranking System",
    RecSys 2019, https://doi.org/10.1145/3298689.3346997, on generated data with a known
    ground truth (`tf_mtml.data.ranking_synthetic`): 2,000 users whose tastes rotate by 0.2
    rad a day, 200 new videos a day (candidates: the last 5 days), 1,000 requests of 20
    candidates a day. Heads: click (binary), watch time (regression, clicks only), like
    (binary, clicks only), rating (regression, 30% of clicks); 8 experts of 64 units with
    expert dropout 0.1, towers of 32 units, a shallow position tower on the click logit.
    Ranking score `1.0 click + 0.1 watch_time + 1.0 like + 0.2 rating` (served as
    `ranking_score`). Schedule: 8 days of 400 steps (batch 256, Adam 3e-3); after day `t`,
    evaluation on day `t + 1`: AUC (binary heads), MSE (regression heads) and NDCG@5/10 of
    the ranking score against the ground-truth utility, as `day_{t+1}/<metric>` in
    `eval_results.json` (`RankingTask.run_schedule`).

    Run the schedule with `RankingTask.run_schedule(trainer)`, or with its benchmark
    (temporal training against a model trained on day 0 only, 2 seeds, drifts 0.2 and 0):
        python -m bench.youtube_ranking
    `python -m trainers.train --experiment=youtube_ranking --mode=train_and_eval` trains on
    the last training day only and evaluates on the day after it, as `run_experiment` does
    not call `run_schedule`.
    Expected: see the docstring of `bench/youtube_ranking.py` for the measured time and
    per-day NDCG@10 / click AUC on 2 CPU cores.
    """
    trainer = TrainerConfig(train_steps=3200, steps_per_loop=100, checkpoint_interval=400,
                            validation_interval=400,
                            optimizer=OptimizerConfig(learning_rate=3e-3))
    return ExperimentConfig(task=RankingConfig(), trainer=trainer)
