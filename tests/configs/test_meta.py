import pytest

from tf_mtml.configs.base import ConfigError
from tf_mtml.configs.meta import MetaDataConfig, MetaLearningConfig, MetaModelConfig
from tf_mtml.configs.meta_experiments import maml_sinusoid, protonet_omniglot


def test_registered_meta_experiments_validate():
    from tf_mtml.configs import experiments

    names = [n for n in experiments.list_experiments() if n.endswith(("omniglot", "sinusoid"))]
    assert {"protonet_omniglot", "maml_omniglot", "maml_sinusoid", "relationnet_omniglot",
            "siamese_omniglot"} <= set(names)
    for name in names:
        experiments.get_experiment(name).validate()


def test_eval_fields_default_to_training_values():
    data = protonet_omniglot().task.data
    assert (data.num_ways, data.eval_ways) == (60, 5)
    assert data.eval_shots == data.num_shots == 1
    assert maml_sinusoid().task.data.eval_queries == 10


@pytest.mark.parametrize("train_split, eval_split", [
    ("train", "train"), ("train+val", "val"), ("train+val", "train")])
def test_overlapping_splits_are_rejected(train_split, eval_split):
    config = MetaDataConfig(train_split=train_split, eval_split=eval_split)
    with pytest.raises(ConfigError, match="share classes"):
        config.validate()


@pytest.mark.parametrize("override, message", [
    ({"data": {"num_ways": 0}}, "num_ways"),
    ({"data": {"source": "mnist"}}, "source=mnist"),
    ({"model": {"algorithm": "mamal"}}, "algorithm=mamal"),
    ({"model": {"inner_steps": -1}}, "inner_steps"),
    ({"model": {"inner_lr": 0.0}}, "inner_lr"),
    ({"model": {"margin": -1.0}}, "margin"),
])
def test_bad_values_are_named(override, message):
    config = MetaLearningConfig().override(override)
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_sinusoid_needs_mlp_and_a_regression_learner():
    config = MetaLearningConfig(data=MetaDataConfig(source="sinusoid"),
                                model=MetaModelConfig(algorithm="maml", backbone="conv4"))
    with pytest.raises(ConfigError, match="backbone=mlp"):
        config.validate()
    config.model = MetaModelConfig(algorithm="protonet", backbone="mlp")
    with pytest.raises(ConfigError, match="regression"):
        config.validate()


def test_gradient_based_learners_evaluate_with_the_trained_way_count():
    config = MetaLearningConfig(data=MetaDataConfig(num_ways=5, eval_num_ways=20),
                                model=MetaModelConfig(algorithm="maml"))
    with pytest.raises(ConfigError, match="eval_num_ways=0"):
        config.validate()
