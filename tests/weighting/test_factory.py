import pytest

from tf_mtml.configs.base import ConfigError
from tf_mtml.configs.multitask import MultiTaskModelConfig
from tf_mtml.models.task_spec import TaskSpec
from tf_mtml.weighting.dwa import DynamicWeightAverage
from tf_mtml.weighting.factory import WEIGHTINGS, get_weighting
from tf_mtml.weighting.gradient_methods import GradientWeighting
from tf_mtml.weighting.gradnorm import GradNorm
from tf_mtml.weighting.random_weighting import RandomLossWeighting

TASKS = [TaskSpec("a", "binary", weight=2.0), TaskSpec("b", "regression")]


def test_every_name_builds_with_its_options():
    built = {name: get_weighting(name, TASKS, seed=3, gradnorm_alpha=0.7, dwa_temperature=5.0,
                                 dwa_period_steps=11, cagrad_c=0.2) for name in WEIGHTINGS}
    assert isinstance(built["dwa"], DynamicWeightAverage)
    assert (built["dwa"].temperature, built["dwa"].period_steps) == (5.0, 11)
    assert isinstance(built["rlw"], RandomLossWeighting) and built["rlw"].seed == 3
    assert isinstance(built["gradnorm"], GradNorm) and built["gradnorm"].alpha == 0.7
    for method in ("pcgrad", "cagrad", "mgda"):
        layer = built[method]
        assert isinstance(layer, GradientWeighting)
        assert (layer.method, layer.seed, layer.cagrad_c) == (method, 3, 0.2)
    for name in ("dwa", "rlw", "gradnorm", "pcgrad"):
        assert built[name].task_weights == {"a": 2.0, "b": 1.0}  # the specs' prior weights


@pytest.mark.parametrize("override, message", [
    ({"weighting": "gradnrom"}, r"Unknown `task.model.weighting=gradnrom`"),
    ({"gradnorm_alpha": -0.5}, r"`task.model.gradnorm_alpha`.*gradnorm_alpha=-0.5"),
    ({"cagrad_c": -1.0}, r"`task.model.cagrad_c`.*cagrad_c=-1.0"),
    ({"dwa_temperature": 0.0}, r"`task.model.dwa_temperature`.*> 0.*dwa_temperature=0.0"),
    ({"dwa_period_steps": -1}, r"`task.model.dwa_period_steps`.*dwa_period_steps=-1"),
])
def test_config_rejects_bad_weighting_values(override, message):
    config = MultiTaskModelConfig().override(override)
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_config_takes_every_weighting_and_diagnostics_flag():
    for name in WEIGHTINGS:
        MultiTaskModelConfig().override({"weighting": name}).validate()
    config = MultiTaskModelConfig().override_from_string(
        "gradient_diagnostics=true,cagrad_c=0.4,gradnorm_alpha=0")
    config.validate()
    assert config.gradient_diagnostics is True and config.cagrad_c == 0.4
    with pytest.raises(ConfigError, match="gradient_diagnostics"):
        MultiTaskModelConfig().override({"gradient_diagnostics": "yes"})
