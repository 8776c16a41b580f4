"""tf_mtml.losses."""

from tf_mtml.losses.contrastive import (
    METRICS,
    MarginContrastiveLoss,
    margin_contrastive,
    pair_distances,
    pairwise_distances,
)
from tf_mtml.losses.nt_xent import NTXentLoss, nt_xent
from tf_mtml.losses.supcon import SupervisedContrastiveLoss, supervised_contrastive
from tf_mtml.losses.triplet import MINING, TripletMarginLoss, triplet_margin

__all__ = [
    "METRICS",
    "MINING",
    "MarginContrastiveLoss",
    "NTXentLoss",
    "SupervisedContrastiveLoss",
    "TripletMarginLoss",
    "margin_contrastive",
    "nt_xent",
    "pair_distances",
    "pairwise_distances",
    "supervised_contrastive",
    "triplet_margin",
]
