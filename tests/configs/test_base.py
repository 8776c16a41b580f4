import pytest

from tf_mtml.configs import multitask_experiments  # noqa: F401
from tf_mtml.configs.base import ConfigError, parse_dotted_overrides
from tf_mtml.configs.registry import get_experiment, list_experiments


def test_registered_experiments_and_unknown_name():
    assert {"mmoe_synthetic", "shared_bottom_synthetic"} <= set(list_experiments())
    with pytest.raises(ConfigError, match=r"Unknown experiment 'mmoe'.*mmoe_synthetic"):
        get_experiment("mmoe")


def test_dotted_overrides_parse_yaml_values_and_lists():
    assert parse_dotted_overrides("a.b=3,a.c=[1, 2],d=true,e=x") == {
        "a": {"b": 3, "c": [1, 2]}, "d": True, "e": "x"}


@pytest.mark.parametrize("text", ["trainer.train_steps", "=3", "a..b=1", "trainer.train_steps=[1"])
def test_malformed_overrides_are_rejected(text):
    with pytest.raises(ConfigError, match=r"override"):
        parse_dotted_overrides(text)


def test_override_sets_nested_typed_values():
    params = get_experiment("mmoe_synthetic")
    params.override_from_string("trainer.train_steps=7,task.model.expert_units=[4, 2],"
                                "trainer.optimizer.learning_rate=1")
    assert params.trainer.train_steps == 7
    assert params.task.model.expert_units == (4, 2)
    assert params.trainer.optimizer.learning_rate == 1.0 and isinstance(
        params.trainer.optimizer.learning_rate, float)


@pytest.mark.parametrize("override, match", [
    ("trainer.train_step=3", r"Unknown config key `trainer.train_step`.*train_steps"),
    ("trainer.train_steps=abc", r"`trainer.train_steps` expects a value of type int.*'abc'"),
    ("task.model.expert_units=3", r"`task.model.expert_units` expects a list"),
    ("runtime.strategy=true", r"`runtime.strategy` expects a value of type str"),
])
def test_bad_overrides_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        get_experiment("mmoe_synthetic").override_from_string(override)


def test_yaml_round_trip_and_files(tmp_path):
    params = get_experiment("mmoe_synthetic")
    params.override_from_string("task.data.correlation=0.9")
    path = tmp_path / "params.yaml"
    path.write_text(params.to_yaml())
    fresh = get_experiment("mmoe_synthetic").override_from_yaml(str(path))
    assert fresh.as_dict() == params.as_dict()
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: {train_steps: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*not valid YAML"):
        get_experiment("mmoe_synthetic").override_from_yaml(str(bad))
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match=r"mapping at the top level"):
        get_experiment("mmoe_synthetic").override_from_yaml(str(scalar))


@pytest.mark.parametrize("override, match", [
    ("task.model.num_experts=0", r"num_experts.*positive integer.*num_experts=0"),
    ("task.model.expert_dropout=1.0", r"expert_dropout.*\[0, 1\).*1.0"),
    ("runtime.strategy=tpu", r"--tpu"),
    ("runtime.tpu=local", r"conflict"),
    ("trainer.checkpoint_interval=150", r"multiple of `trainer.steps_per_loop=250`"),
    ("task.tasks=[{name: y1, type: ranking}, {name: y2, type: regression}]", r"ranking"),
    ("runtime.mixed_precision_dtype=float16", r"mixed_precision_dtype=float16"),
])
def test_validate_rejects_inconsistent_configs(override, match):
    params = get_experiment("mmoe_synthetic").override_from_string(override)
    with pytest.raises(ConfigError, match=match):
        params.validate()
