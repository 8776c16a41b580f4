"""Every public Keras object is registered under `tf_mtml>` and survives serialization."""

import inspect

import keras
import pytest

import tf_mtml.layers as layers
import tf_mtml.losses as losses
import tf_mtml.meta as meta
import tf_mtml.models as models
from tf_mtml.losses.masked import MaskedTaskLoss
from tf_mtml.models.multitask_model import MultiTaskModel
from tf_mtml.weighting.static import StaticWeighting
from tf_mtml.weighting.uncertainty import UncertaintyWeighting

PUBLIC = [getattr(module, name) for module in (layers, losses, meta, models)
          for name in module.__all__ if inspect.isclass(getattr(module, name))]
PUBLIC += [MaskedTaskLoss, MultiTaskModel, StaticWeighting, UncertaintyWeighting]


def test_every_layer_module_symbol_is_checked():
    assert {"MMoE", "TaskTowers", "FiLM", "TaskDescriptor", "MAML", "PrototypicalNetwork",
            "NTXentLoss"} <= {c.__name__ for c in PUBLIC}


@pytest.mark.parametrize("cls", PUBLIC, ids=lambda c: c.__name__)
def test_registered_under_tf_mtml(cls):
    name = keras.saving.get_registered_name(cls)
    assert name == f"tf_mtml>{cls.__name__}"
    assert keras.saving.get_registered_object(name) is cls
