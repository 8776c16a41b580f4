"""tf_mtml.data: task mixtures, multi-label batches and synthetic multi-task data."""

from tf_mtml.data.multi_label import multi_label_dataset
from tf_mtml.data.synthetic import TASK_NAMES, MMoESyntheticProblem
from tf_mtml.data.task_sampling import (
    STRATEGIES,
    TASK_ID_KEY,
    normalize_sampling_weights,
    task_sampling_probabilities,
    two_level_task_dataset,
)

__all__ = [
    "STRATEGIES",
    "TASK_ID_KEY",
    "TASK_NAMES",
    "MMoESyntheticProblem",
    "multi_label_dataset",
    "normalize_sampling_weights",
    "task_sampling_probabilities",
    "two_level_task_dataset",
]
