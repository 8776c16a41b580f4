"""Config of the meta-learning task family: episodes, the meta-learner and its backbone."""

from __future__ import annotations

import dataclasses
import math

from tf_mtml.configs.base import Config, ConfigError, check_data_dir_is_read

DATA_SOURCES = ("omniglot", "sinusoid")
OMNIGLOT_SPLITS = ("train", "val", "test", "train+val")
ALGORITHMS = ("protonet", "matching", "relation", "siamese", "maml", "fomaml", "meta_sgd",
              "anil", "reptile", "lstm_meta", "black_box", "hallucination")
BACKBONES = ("conv4", "mlp")
META_BATCH_MODES = ("auto", "vectorized_map", "map_fn")
DISTANCES = ("euclidean", "cosine")  # euclidean: squared, as in Snell et al.
GRADIENT_BASED = ("maml", "fomaml", "meta_sgd", "anil", "reptile", "lstm_meta")


@dataclasses.dataclass
class MetaDataConfig(Config):
    """Episodes: N-way K-shot with Q queries per class (Omniglot) or K-shot sinusoids.

    `eval_*` fields set to 0 reuse the training value (ProtoNet trains 60-way, tests 5-way).
    `data_dir` empty means `TF_MTML_DATA_DIR`, else `../shared/data` (see
    `tf_mtml.data.data_dir.resolve_data_dir`).
    """

    source: str = "omniglot"
    data_dir: str = ""
    num_ways: int = 5
    num_shots: int = 1
    num_queries: int = 15
    meta_batch_size: int = 32
    rotations: bool = True
    image_size: int = 28
    train_split: str = "train"
    eval_split: str = "test"
    eval_num_ways: int = 0
    eval_num_shots: int = 0
    eval_num_queries: int = 0
    eval_episodes: int = 1000
    eval_meta_batch_size: int = 0
    episode_seed: int = 0

    @property
    def eval_ways(self) -> int:
        return self.eval_num_ways or self.num_ways

    @property
    def eval_shots(self) -> int:
        return self.eval_num_shots or self.num_shots

    @property
    def eval_queries(self) -> int:
        return self.eval_num_queries or self.num_queries

    @property
    def eval_batch_size(self) -> int:
        return self.eval_meta_batch_size or self.meta_batch_size

    def validate(self) -> None:
        if self.source not in DATA_SOURCES:
            raise ConfigError(
                f"Unknown `task.data.source={self.source}`; expected one of {DATA_SOURCES}.")
        check_data_dir_is_read(self.data_dir, self.source, ("omniglot",))
        for name in ("num_ways", "num_shots", "num_queries", "meta_batch_size", "image_size",
                     "eval_episodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"`task.data.{name}` must be >= 1. Received: "
                                  f"{name}={getattr(self, name)}")
        for name in ("eval_num_ways", "eval_num_shots", "eval_num_queries",
                     "eval_meta_batch_size"):
            if getattr(self, name) < 0:
                raise ConfigError(f"`task.data.{name}` must be >= 0 (0 reuses the training "
                                  f"value). Received: {name}={getattr(self, name)}")
        for name in ("train_split", "eval_split"):
            if self.source == "omniglot" and getattr(self, name) not in OMNIGLOT_SPLITS:
                raise ConfigError(f"Unknown `task.data.{name}={getattr(self, name)}`; expected "
                                  f"one of {OMNIGLOT_SPLITS}.")
        if self.source == "omniglot" and (set(self.train_split.split("+"))
                                          & set(self.eval_split.split("+"))):
            raise ConfigError(
                f"`task.data.train_split={self.train_split}` and `eval_split={self.eval_split}` "
                "share classes; meta-test classes must never be seen in meta-training. Use "
                "train_split=train (or train+val) with eval_split=val or test.")


@dataclasses.dataclass
class MetaModelConfig(Config):
    """The meta-learner (`algorithm`) and its backbone.

    `inner_*` fields apply to the gradient-based learners; `eval_inner_steps=0` reuses
    `inner_steps` (MAML adapts with 1 step in training and 3 at test on Omniglot).
    """

    algorithm: str = "protonet"
    backbone: str = "conv4"
    filters: int = 64
    hidden_units: tuple[int, ...] = (40, 40)
    batch_norm_synchronized: bool = False
    distance: str = "euclidean"
    inner_lr: float = 0.4
    inner_steps: int = 1
    eval_inner_steps: int = 0
    recompute: bool = False
    # How MAML-family learners loop over the episodes of a meta-batch: `vectorized_map` is the
    # fastest in a plain tf.function on CPU; `map_fn` is the one for XLA (TPU); `auto` picks
    # map_fn under a TPU strategy, else vectorized_map (`tasks.meta_learners`).
    meta_batch_mode: str = "auto"
    margin: float = 1.0
    num_hallucinated: int = 2
    attention_heads: int = 4
    attention_blocks: int = 2

    def validate(self) -> None:
        checks = (("algorithm", ALGORITHMS), ("backbone", BACKBONES), ("distance", DISTANCES),
                  ("meta_batch_mode", META_BATCH_MODES))
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ConfigError(f"Unknown `task.model.{name}={getattr(self, name)}`; expected "
                                  f"one of {allowed}.")
        if self.inner_steps < 0 or self.eval_inner_steps < 0:
            raise ConfigError(
                "`task.model.inner_steps` and `eval_inner_steps` must be >= 0 (0 = no adaptation"
                f"). Received: inner_steps={self.inner_steps}, "
                f"eval_inner_steps={self.eval_inner_steps}")
        if not 0 < self.inner_lr < math.inf:
            raise ConfigError(
                "Received an invalid value for `task.model.inner_lr`, expected a finite number "
                f"> 0. Received: inner_lr={self.inner_lr}")
        if self.margin < 0:
            raise ConfigError(f"`task.model.margin` must be >= 0. Received: {self.margin}")
        if self.filters < 1 or min(self.hidden_units, default=1) < 1:
            raise ConfigError("`task.model.filters` and `hidden_units` must be positive.")


@dataclasses.dataclass
class MetaLearningConfig(Config):
    """A meta-learning experiment: episodes and meta-learner."""

    data: MetaDataConfig = dataclasses.field(default_factory=MetaDataConfig)
    model: MetaModelConfig = dataclasses.field(default_factory=MetaModelConfig)

    def validate(self) -> None:
        super().validate()
        if self.data.source == "sinusoid" and self.model.backbone != "mlp":
            raise ConfigError(
                "`task.data.source=sinusoid` needs `task.model.backbone=mlp` (1-d inputs). "
                f"Received: backbone={self.model.backbone}")
        if self.model.algorithm in GRADIENT_BASED and self.data.eval_ways != self.data.num_ways:
            raise ConfigError(
                f"`task.model.algorithm={self.model.algorithm}` adapts a classifier head of "
                f"`task.data.num_ways={self.data.num_ways}` outputs, so it cannot be evaluated "
                f"{self.data.eval_ways}-way. Set `task.data.eval_num_ways=0` (same as training).")
        if self.data.source == "sinusoid" and self.model.algorithm not in (
                *GRADIENT_BASED, "black_box"):
            raise ConfigError(
                f"`task.model.algorithm={self.model.algorithm}` classifies; sinusoid is regression."
                f" Use one of {(*GRADIENT_BASED, 'black_box')}.")
