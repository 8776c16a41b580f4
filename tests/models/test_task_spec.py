import pytest

from tf_mtml.models.task_spec import TaskSpec, as_task_specs


def test_defaults_per_type():
    assert TaskSpec("a", "binary").loss_name == "binary_crossentropy"
    assert TaskSpec("a", "binary").metric_names == ("auc",)
    assert TaskSpec("m", "multiclass", num_classes=4).output_units == 4
    assert TaskSpec("r", "regression").metric_names == ("mse",)
    assert TaskSpec("r", "regression", metrics=["mae"]).metrics == ("mae",)


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "a", "type": "ranking"}, r"type.*'binary', 'multiclass', 'regression'.*ranking"),
    ({"name": "a", "type": "multiclass"}, r"num_classes.*>= 2.*None"),
    ({"name": "a", "type": "binary", "num_classes": 3}, r"only for multiclass.*3"),
    ({"name": "a", "type": "binary", "weight": -1.0}, r"weight.*>= 0.*-1.0"),
    ({"name": "a", "type": "regression", "loss": "hinge"}, r"loss.*'mse'.*hinge"),
    ({"name": "a", "type": "binary", "metrics": ["mse"]}, r"metric.*'auc'.*mse"),
    ({"name": "a", "type": "binary", "standardize": True}, r"standardize.*regression"),
    ({"name": "a/b", "type": "binary"}, r"name.*a/b"),
])
def test_invalid_specs_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TaskSpec(**kwargs)


def test_duplicate_and_empty_task_lists():
    with pytest.raises(ValueError, match=r"duplicates: \['a'\]"):
        as_task_specs([TaskSpec("a", "binary"), {"name": "a", "type": "regression"}])
    with pytest.raises(ValueError, match="at least one task"):
        as_task_specs([])
