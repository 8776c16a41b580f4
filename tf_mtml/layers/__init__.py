"""tf_mtml.layers: Keras 3 multi-task layers (conditioning, towers, MMoE, Shared-Bottom)."""

from tf_mtml.layers.conditioning import (
    AdditiveConditioning,
    ConcatConditioning,
    FiLM,
    MultiplicativeGating,
)
from tf_mtml.layers.gate_statistics import GateStatistics
from tf_mtml.layers.mlp import MLP
from tf_mtml.layers.mmoe import MMoE
from tf_mtml.layers.multi_head import MultiHead, TaskTowers
from tf_mtml.layers.shared_bottom import (
    SharedBottom,
    mmoe_param_count,
    shared_bottom_param_count,
    shared_bottom_units_for_budget,
)
from tf_mtml.layers.task_descriptor import TaskDescriptor

__all__ = [
    "MLP",
    "AdditiveConditioning",
    "ConcatConditioning",
    "FiLM",
    "GateStatistics",
    "MMoE",
    "MultiHead",
    "MultiplicativeGating",
    "SharedBottom",
    "TaskDescriptor",
    "TaskTowers",
    "mmoe_param_count",
    "shared_bottom_param_count",
    "shared_bottom_units_for_budget",
]
