"""tf_mtml.layers: Keras 3 multi-task layers (conditioning, towers, experts, soft sharing)."""

from tf_mtml.layers.batch_norm import SecondOrderBatchNormalization
from tf_mtml.layers.conditioning import (
    AdditiveConditioning,
    ConcatConditioning,
    FiLM,
    MultiplicativeGating,
)
from tf_mtml.layers.cross_stitch import CrossStitch, CrossStitchNetwork
from tf_mtml.layers.gate_statistics import GateStatistics, expert_utilisation_warnings
from tf_mtml.layers.mlp import MLP
from tf_mtml.layers.mmoe import MMoE
from tf_mtml.layers.multi_head import MultiHead, TaskTowers
from tf_mtml.layers.ple import CGC, PLE
from tf_mtml.layers.shared_bottom import (
    SharedBottom,
    mmoe_param_count,
    shared_bottom_param_count,
    shared_bottom_units_for_budget,
)
from tf_mtml.layers.soft_sharing import PairwiseL2, SoftSharing
from tf_mtml.layers.task_descriptor import TaskDescriptor

__all__ = [
    "SecondOrderBatchNormalization",
    "CGC",
    "MLP",
    "PLE",
    "AdditiveConditioning",
    "ConcatConditioning",
    "CrossStitch",
    "CrossStitchNetwork",
    "FiLM",
    "GateStatistics",
    "MMoE",
    "MultiHead",
    "MultiplicativeGating",
    "PairwiseL2",
    "SharedBottom",
    "SoftSharing",
    "TaskDescriptor",
    "TaskTowers",
    "expert_utilisation_warnings",
    "mmoe_param_count",
    "shared_bottom_param_count",
    "shared_bottom_units_for_budget",
]
