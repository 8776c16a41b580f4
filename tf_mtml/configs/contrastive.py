"""Config of the contrastive learning task family: data, augmentations, model, evaluation."""

from __future__ import annotations

import dataclasses

from tf_mtml.configs.base import Config, ConfigError, check_data_dir_is_read

DATA_SOURCES = ("digits", "omniglot")
OMNIGLOT_SPLITS = ("train", "val", "test", "train+val")
ENCODERS = ("conv4",)
LOSSES = ("nt_xent", "supcon")


@dataclasses.dataclass
class ContrastiveDataConfig(Config):
    """Pretraining batches and the evaluation data.

    `digits`: scikit-learn's 8x8 digits with a seeded, stratified `test_fraction` held out;
    pretraining batches are shuffled train images (labels only reach `supcon`).
    `omniglot`: batches of `classes_per_batch` characters of `train_split` with
    `global_batch_size / classes_per_batch` drawings each (`rotations` adds the rotated
    characters as classes), so that SupCon sees several positives per anchor; few-shot
    evaluation uses `eval_split`. `data_dir` empty means `TF_MTML_DATA_DIR`, else
    `../shared/data`.
    """

    source: str = "digits"
    data_dir: str = ""
    global_batch_size: int = 256
    test_fraction: float = 0.3
    split_seed: int = 0
    image_size: int = 28
    train_split: str = "train"
    eval_split: str = "test"
    rotations: bool = True
    classes_per_batch: int = 64

    def validate(self) -> None:
        if self.source not in DATA_SOURCES:
            raise ConfigError(
                f"Unknown `task.data.source={self.source}`; expected one of {DATA_SOURCES}.")
        check_data_dir_is_read(self.data_dir, self.source, ("omniglot",))
        for name in ("global_batch_size", "image_size", "classes_per_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"`task.data.{name}` must be >= 1. Received: "
                                  f"{name}={getattr(self, name)}")
        if self.global_batch_size < 2:
            raise ConfigError("`task.data.global_batch_size` must be >= 2: contrastive losses "
                              f"need negatives. Received: {self.global_batch_size}")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(
                f"`task.data.test_fraction` must be in (0, 1). Received: {self.test_fraction}")
        if self.source == "omniglot":
            self._validate_omniglot()

    def _validate_omniglot(self) -> None:
        for name in ("train_split", "eval_split"):
            if getattr(self, name) not in OMNIGLOT_SPLITS:
                raise ConfigError(f"Unknown `task.data.{name}={getattr(self, name)}`; expected "
                                  f"one of {OMNIGLOT_SPLITS}.")
        if set(self.train_split.split("+")) & set(self.eval_split.split("+")):
            raise ConfigError(
                f"`task.data.train_split={self.train_split}` and `eval_split={self.eval_split}` "
                "share characters; few-shot evaluation must use characters never seen in "
                "pretraining. Use train_split=train (or train+val) with eval_split=test.")
        if self.global_batch_size % self.classes_per_batch or (
                self.global_batch_size // self.classes_per_batch < 2):
            raise ConfigError(
                f"`task.data.global_batch_size={self.global_batch_size}` must be a multiple of "
                f"`task.data.classes_per_batch={self.classes_per_batch}` with at least 2 "
                "drawings per character, e.g. global_batch_size=256, classes_per_batch=64.")


@dataclasses.dataclass
class ContrastiveAugmentConfig(Config):
    """The random views (`tf_mtml.data.augment`), drawn independently for the two views.

    A random resized crop (area fraction `crop_scale`, aspect ratio `crop_ratio`), an optional
    horizontal flip, brightness / contrast jitter applied with `jitter_probability`, and an
    optional Gaussian blur. SimCLR's colour distortions do not exist on grey images, so crops
    carry most of the signal; flips are off by default because they change digits and
    characters (a mirrored 2 is not a 2).
    """

    crop_scale: tuple[float, ...] = (0.5, 1.0)
    crop_ratio: tuple[float, ...] = (0.75, 4 / 3)
    flip_probability: float = 0.0
    brightness: float = 0.4
    contrast: float = 0.4
    jitter_probability: float = 0.8
    blur_probability: float = 0.0

    def validate(self) -> None:
        for name in ("crop_scale", "crop_ratio"):
            value = getattr(self, name)
            if len(value) != 2 or not 0 < value[0] <= value[1]:
                raise ConfigError(f"`task.augment.{name}` must be a pair [min, max] with "
                                  f"0 < min <= max. Received: {list(value)}")
        if self.crop_scale[1] > 1:
            raise ConfigError("`task.augment.crop_scale` is a fraction of the image area; its "
                              f"max must be <= 1. Received: {list(self.crop_scale)}")
        for name in ("flip_probability", "jitter_probability", "blur_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"`task.augment.{name}` must be a probability in [0, 1]. "
                                  f"Received: {getattr(self, name)}")
        for name in ("brightness", "contrast"):
            if getattr(self, name) < 0:
                raise ConfigError(f"`task.augment.{name}` must be >= 0 (0 disables it). "
                                  f"Received: {getattr(self, name)}")


@dataclasses.dataclass
class ContrastiveModelConfig(Config):
    """Encoder, projection head and loss.

    `conv4` is the few-shot Conv-4 (`tf_mtml.meta.backbones.conv4`); `pool_blocks=3` fits
    8x8 digits (8 -> 4 -> 2 -> 1, the default source), 4 fits 28x28 Omniglot. `nt_xent`
    (SimCLR) uses no labels; `supcon` (Khosla et al. 2020) treats every same-class image in
    the batch as a positive.
    """

    encoder: str = "conv4"
    filters: int = 32
    pool_blocks: int = 3
    projection_units: tuple[int, ...] = (128, 64)
    loss: str = "nt_xent"
    temperature: float = 0.1

    def validate(self) -> None:
        for name, allowed in (("encoder", ENCODERS), ("loss", LOSSES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"Unknown `task.model.{name}={getattr(self, name)}`; expected "
                                  f"one of {allowed}.")
        if self.filters < 1 or min(self.projection_units, default=1) < 1:
            raise ConfigError("`task.model.filters` and `projection_units` must be positive. "
                              f"Received: filters={self.filters}, "
                              f"projection_units={list(self.projection_units)}")
        if not 0 <= self.pool_blocks <= 4:
            raise ConfigError(
                f"`task.model.pool_blocks` must be in 0..4. Received: {self.pool_blocks}")
        if not self.temperature > 0:
            raise ConfigError(
                f"`task.model.temperature` must be > 0. Received: {self.temperature}")


@dataclasses.dataclass
class ContrastiveEvalConfig(Config):
    """What `evaluate` measures on the frozen or fine-tuned encoder.

    Digits: for each `labels_per_class` budget (subsets drawn from the train split with
    `subset_seed`), a logistic-regression probe (inverse regularisation `probe_c`) on the
    L2-normalised embeddings, and a fine-tune of a copy of the encoder with a new softmax
    head (`finetune_*`, the same augmentations when `finetune_augment`); `scratch_baseline`
    adds the same fine-tune from a fresh initialisation. Omniglot: nearest-prototype
    accuracy (cosine) over `episodes` `num_ways`-way `num_shots`-shot episodes with a 95%
    interval. Both: the share of evaluation images flagged by the k-NN OOD score
    (`ood_neighbors`, threshold at `ood_quantile` of the training embeddings, at most
    `ood_max_references` of them kept).
    """

    labels_per_class: tuple[int, ...] = (1, 5, 10)
    subset_seed: int = 0
    probe_c: float = 1.0
    finetune_steps: int = 300
    finetune_learning_rate: float = 1e-3
    finetune_batch_size: int = 32
    finetune_augment: bool = True
    scratch_baseline: bool = False
    num_ways: int = 5
    num_shots: int = 1
    num_queries: int = 15
    episodes: int = 1000
    episode_batch_size: int = 50
    episode_seed: int = 0
    ood_neighbors: int = 10
    ood_quantile: float = 0.95
    ood_max_references: int = 2048

    def validate(self) -> None:
        if not self.labels_per_class or min(self.labels_per_class) < 1:
            raise ConfigError("`task.evaluation.labels_per_class` must be a non-empty list of "
                              f"positive budgets. Received: {list(self.labels_per_class)}")
        for name in ("finetune_steps", "finetune_batch_size", "num_ways", "num_shots",
                     "num_queries", "episodes", "episode_batch_size", "ood_neighbors"):
            if getattr(self, name) < 1:
                raise ConfigError(f"`task.evaluation.{name}` must be >= 1. Received: "
                                  f"{name}={getattr(self, name)}")
        for name in ("probe_c", "finetune_learning_rate"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"`task.evaluation.{name}` must be > 0. Received: "
                                  f"{getattr(self, name)}")
        if not 0 < self.ood_quantile < 1:
            raise ConfigError("`task.evaluation.ood_quantile` must be in (0, 1). Received: "
                              f"{self.ood_quantile}")
        if self.ood_max_references <= self.ood_neighbors:
            raise ConfigError(
                f"`task.evaluation.ood_max_references={self.ood_max_references}` must exceed "
                f"`ood_neighbors={self.ood_neighbors}`.")


@dataclasses.dataclass
class ContrastiveConfig(Config):
    """A contrastive pretraining experiment and its downstream evaluation."""

    data: ContrastiveDataConfig = dataclasses.field(default_factory=ContrastiveDataConfig)
    augment: ContrastiveAugmentConfig = dataclasses.field(
        default_factory=ContrastiveAugmentConfig)
    model: ContrastiveModelConfig = dataclasses.field(default_factory=ContrastiveModelConfig)
    evaluation: ContrastiveEvalConfig = dataclasses.field(default_factory=ContrastiveEvalConfig)

    def validate(self) -> None:
        super().validate()
        size = 8 if self.data.source == "digits" else self.data.image_size
        if size < 2**self.model.pool_blocks:
            raise ConfigError(
                f"`task.model.pool_blocks={self.model.pool_blocks}` halves the {size}x{size} "
                f"images of `task.data.source={self.data.source}` below 1 pixel; use "
                f"pool_blocks <= {size.bit_length() - 1}.")
