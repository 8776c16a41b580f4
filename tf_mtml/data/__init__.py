"""tf_mtml.data: task mixtures, few-shot episodes, multi-label batches and data sets."""

from tf_mtml.data.augment import (
    as_seed,
    color_jitter,
    gaussian_blur,
    random_crop_box,
    random_flip_left_right,
    random_grayscale,
    random_resized_crop,
)
from tf_mtml.data.census import CensusIncome, download_census_income, load_census_income
from tf_mtml.data.data_dir import resolve_data_dir
from tf_mtml.data.episodes import (
    class_datasets_from_files,
    episode_dataset,
    streaming_episode_dataset,
)
from tf_mtml.data.labelled import (
    ClassIndexedData,
    from_arrays,
    from_tf_dataset,
    labelled_class_datasets,
    split_classes,
)
from tf_mtml.data.mixing import cutmix, mixup
from tf_mtml.data.multi_label import multi_label_dataset
from tf_mtml.data.omniglot import (
    OMNIGLOT_URLS,
    download_omniglot,
    load_omniglot,
    omniglot_characters,
)
from tf_mtml.data.ranking_synthetic import RankingDay, RankingSyntheticProblem
from tf_mtml.data.sinusoid import sinusoid_episode_dataset
from tf_mtml.data.synthetic import TASK_NAMES, MMoESyntheticProblem
from tf_mtml.data.task_sampling import (
    STRATEGIES,
    TASK_ID_KEY,
    normalize_sampling_weights,
    task_sampling_probabilities,
    two_level_task_dataset,
)
from tf_mtml.data.views import simclr_augmentation, two_views

__all__ = [
    "OMNIGLOT_URLS",
    "STRATEGIES",
    "TASK_ID_KEY",
    "TASK_NAMES",
    "CensusIncome",
    "ClassIndexedData",
    "MMoESyntheticProblem",
    "RankingDay",
    "RankingSyntheticProblem",
    "as_seed",
    "class_datasets_from_files",
    "color_jitter",
    "cutmix",
    "download_census_income",
    "download_omniglot",
    "episode_dataset",
    "from_arrays",
    "from_tf_dataset",
    "gaussian_blur",
    "labelled_class_datasets",
    "load_census_income",
    "load_omniglot",
    "mixup",
    "multi_label_dataset",
    "normalize_sampling_weights",
    "omniglot_characters",
    "random_crop_box",
    "random_flip_left_right",
    "random_grayscale",
    "random_resized_crop",
    "resolve_data_dir",
    "simclr_augmentation",
    "sinusoid_episode_dataset",
    "split_classes",
    "streaming_episode_dataset",
    "task_sampling_probabilities",
    "two_level_task_dataset",
    "two_views",
]
