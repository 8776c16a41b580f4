"""The ranking config: defaults, the registered experiment, overrides and validation errors."""

import pytest

from tf_mtml.configs import experiments
from tf_mtml.configs.base import ConfigError
from tf_mtml.configs.ranking import RankingConfig


def _config(overrides: str = "") -> RankingConfig:
    return RankingConfig().override_from_string(overrides)


def test_registered_experiment_validates_and_round_trips_through_yaml(tmp_path):
    params = experiments.get_experiment("youtube_ranking")
    params.validate()
    assert isinstance(params.task, RankingConfig)
    assert params.trainer.train_steps % params.task.data.num_days == 0
    path = tmp_path / "params.yaml"
    path.write_text(params.to_yaml())
    again = experiments.get_experiment("youtube_ranking")
    again.override({"task": {"model": {"score_weights": {"click": 9.0}}}})
    again.override_from_yaml(str(path))
    assert again.as_dict() == params.as_dict()


def test_problem_carries_the_data_fields():
    config = _config("data.preference_drift=0.5,data.problem_seed=3")
    problem = config.data.problem()
    assert problem.preference_drift == 0.5 and problem.seed == 3
    assert problem.list_size == config.data.list_size


def test_score_weights_override_replaces_the_whole_mapping():
    params = experiments.get_experiment("youtube_ranking").override_from_string(
        "task.model.score_weights={click: 1.0, like: 2}")
    params.validate()
    assert params.task.model.score_weights == {"click": 1.0, "like": 2}


@pytest.mark.parametrize("override,match", [
    ("task.data.latent_dim=5", "latent_dim"),
    ("task.data.list_size=2000", "candidate pool"),
    ("task.data.num_days=0", "num_days"),
    ("task.data.global_batch_size=30000", "global_batch_size=30000"),
    ("task.model.num_experts=0", "num_experts"),
    ("task.model.expert_dropout=1.0", "expert_dropout"),
    ("task.model.tower_units=[0]", "tower_units"),
    ("task.model.weighting=magic", "weighting=magic"),
    ("task.model.score_weights={click: -1}", "score_weights"),
    ("task.model.score_weights={click: 0}", "at least one > 0"),
    ("task.model.score_weights={dwell: 1}", r"names \['dwell'\]"),
    ("task.model.position_bias_tasks=[share]", r"position_bias_tasks` names \['share'\]"),
    ("task.ndcg_cutoffs=[21]", "ndcg_cutoffs"),
    ("task.ndcg_cutoffs=[]", "ndcg_cutoffs"),
    ("task.tasks=[{name: click, type: regression}]", "not a generated objective"),
    ("task.tasks=[{name: shares, type: binary}]", "not a generated objective"),
    ("task.tasks=[{name: click, type: binary, weight: -1}]", "Invalid `task.tasks`"),
])
def test_invalid_values_raise_a_config_error_naming_them(override, match):
    params = experiments.get_experiment("youtube_ranking").override_from_string(override)
    with pytest.raises(ConfigError, match=match):
        params.validate()


def test_a_subset_of_the_objectives_is_a_valid_model():
    config = _config("tasks=[{name: click, type: binary}, {name: like, type: binary}],"
                     "model.score_weights={click: 1, like: 1}")
    config.validate()
    config.model.score_weights = {"click": 1, "rating": 1}
    with pytest.raises(ConfigError, match=r"\['rating'\]"):
        config.validate()
