"""Smoke test of bench/youtube_ranking.py: both arms at toy size, and the summary maths."""

import json
import statistics

import pytest

from bench import youtube_ranking

TINY = ("task.data.requests_per_day=40,task.data.num_users=30,task.data.list_size=10,"
        "task.data.new_videos_per_day=10,task.data.video_lifetime_days=3,"
        "task.data.global_batch_size=16,task.model.num_experts=2,task.model.expert_units=[8],"
        "task.model.tower_units=[4]")


@pytest.mark.slow
def test_toy_benchmark_reports_both_arms_per_day_and_their_gaps():
    report = youtube_ranking.run_benchmark(seeds=2, drifts=[0.5], num_days=2, steps_per_day=3,
                                           overrides=TINY)
    json.dumps(report)
    assert (report["num_days"], report["steps_per_day"]) == (2, 3)
    result = report["by_drift"]["0.5"]
    # Day 1: both arms are the same model (same seed, data and first-day steps).
    assert result["day_1_identical"]
    for day in ("day_1", "day_2"):
        for arm in ("temporal", "frozen"):
            figures = result["arms"][arm][day]
            assert set(figures) == set(youtube_ranking.FIGURES)
            for stats in figures.values():
                assert len(stats["values"]) == 2
                assert stats["mean"] == pytest.approx(statistics.fmean(stats["values"]))
                assert stats["std"] == pytest.approx(statistics.stdev(stats["values"]))
        gaps = [t - f for t, f in zip(result["arms"]["temporal"][day]["ndcg@10"]["values"],
                                      result["arms"]["frozen"][day]["ndcg@10"]["values"],
                                      strict=True)]
        assert result["temporal_minus_frozen"][day]["ndcg@10"]["values"] == pytest.approx(gaps)
        refs = result["references"][day]
        assert 0 < refs["random/ndcg@10"] < refs["click_only_oracle/ndcg@10"] < 1
    assert result["temporal_minus_frozen"]["day_1"]["ndcg@10"]["values"] == [0.0, 0.0]
    # The temporal model trained on day 1 too: it differs from the frozen one on day 2.
    assert result["temporal_minus_frozen"]["day_2"]["click/auc"]["values"] != [0.0, 0.0]
