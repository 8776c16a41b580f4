"""tf_mtml.models."""

from tf_mtml.models.embedding import EmbeddingModel
from tf_mtml.models.ood import KNNOODScorer, distribution_shift_z

__all__ = ["EmbeddingModel", "KNNOODScorer", "distribution_shift_z"]
