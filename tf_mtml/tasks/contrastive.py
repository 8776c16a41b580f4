"""The contrastive task family: two-view pretraining, probe / fine-tune / few-shot evaluation.

Pretraining draws two augmented views of every image of a batch and trains an
`EmbeddingModel` with NT-Xent (SimCLR, no labels) or SupCon (labels). Evaluation happens on
the frozen or copied encoder (`evaluate_model`), and the export serves L2-normalised
embeddings (`serving_default`) and a k-NN out-of-distribution score (`ood_score`).

Limits worth knowing, all visible on small data:

- The representation is only as invariant as the augmentations make it: on grey images
  there is no colour distortion, so crops and contrast do the work; an augmentation that
  changes the class (a flipped digit) teaches the wrong invariance.
- NT-Xent treats every other image of the batch as a negative, including images of the
  anchor's own class: with 10 digit classes, about a tenth of the negatives are false
  negatives that the loss pushes away. SupCon removes them when labels exist.
- Class imbalance skews both: frequent classes dominate the negatives (NT-Xent) and the
  positives (SupCon), and a k-NN OOD score calls rare classes far.
- Negatives come from the batch (and, under a distribution strategy, from the replica's
  share of it; SimCLR gathers them across TPU cores): the loss needs large batches and, as
  every pair is seen once per epoch, many epochs; SimCLR trains for hundreds.
"""

from __future__ import annotations

import functools
import math

import keras
import numpy as np
import tensorflow as tf

from tf_mtml.configs.contrastive import ContrastiveConfig
from tf_mtml.data import augment
from tf_mtml.data._common import check_positive_int, shuffled_epochs
from tf_mtml.data.data_dir import resolve_data_dir
from tf_mtml.data.digits import NUM_CLASSES, DigitsSplit, labelled_subset, load_digits_split
from tf_mtml.data.episodes import episode_dataset
from tf_mtml.data.labelled import ClassIndexedData
from tf_mtml.data.omniglot import load_omniglot
from tf_mtml.losses.nt_xent import nt_xent
from tf_mtml.losses.supcon import supervised_contrastive
from tf_mtml.meta.backbones import conv4
from tf_mtml.meta.base import QUERY_X, QUERY_Y, SUPPORT_X, SUPPORT_Y
from tf_mtml.meta.prototypical import PrototypicalNetwork
from tf_mtml.models.embedding import EmbeddingModel
from tf_mtml.models.ood import KNNOODScorer
from tf_mtml.serving.export import SERVING_DEFAULT
from tf_mtml.serving.validation import gate, unit_interval_check
from tf_mtml.tasks.contrastive_eval import embed_images, fine_tune_accuracy, probe_accuracy
from tf_mtml.train.nonfinite import apply_gradients

VIEWS, LABELS, IMAGES = "views", "labels", "images"


class ContrastiveTask:
    """Builds and steps an `EmbeddingModel` from a `ContrastiveConfig`.

    Args:
        config: The experiment's `task` section.
        seed: Seeds weight initialisation, batch order and augmentations (`runtime.seed`).
    """

    def __init__(self, config: ContrastiveConfig, seed: int = 0):
        self.config = config
        self.seed = seed
        self._classes: dict[str, ClassIndexedData] = {}

    # ------------------------------------------------------------------------------ data
    @functools.cached_property
    def digits(self) -> DigitsSplit:
        return load_digits_split(self.config.data.test_fraction, self.config.data.split_seed)

    def classes(self, split: str) -> ClassIndexedData:
        """The Omniglot characters of `split`, decoded once."""
        if split not in self._classes:
            data = self.config.data
            self._classes[split] = load_omniglot(resolve_data_dir(data.data_dir or None), split,
                                                 image_size=data.image_size)
        return self._classes[split]

    def image_shape(self) -> tuple[int, int, int]:
        size = 8 if self.config.data.source == "digits" else self.config.data.image_size
        return (size, size, 1)

    def train_images(self) -> np.ndarray:
        """Every pretraining image, `(n, *image_shape)` float32 in `[0, 1]`."""
        if self.config.data.source == "digits":
            return self.digits.train_images
        return self.classes(self.config.data.train_split).examples

    def augment(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """One random view of one image `(H, W, C)`, a pure function of `seed` `(2,)`."""
        config = self.config.augment
        crop, flip, jitter, blur = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
        view = augment.random_resized_crop(image, self.image_shape()[:2], crop,
                                           scale=tuple(config.crop_scale),
                                           ratio=tuple(config.crop_ratio))
        if config.flip_probability:
            view = augment.random_flip_left_right(view, flip, config.flip_probability)
        if config.brightness or config.contrast:
            view = augment.color_jitter(view, jitter, brightness=config.brightness,
                                        contrast=config.contrast, saturation=0.0, hue=0.0,
                                        probability=config.jitter_probability)
        if config.blur_probability:
            view = augment.gaussian_blur(view, blur, probability=config.blur_probability)
        return view

    def _two_views(self, base_seed: int):
        def views(index, example):
            image, label = example
            first, second = tf.unstack(tf.random.experimental.stateless_split(
                tf.stack([tf.constant(base_seed, tf.int64), index]), 2))
            return {VIEWS: tf.stack([self.augment(image, first), self.augment(image, second)]),
                    LABELS: tf.cast(label, tf.int32)}

        return views

    def build_inputs(self, training: bool,
                     input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        """Infinite per-replica batches `{"views": (b, 2, H, W, 1), "labels": (b,)}`.

        Each input pipeline reads its own shard (digits) or samples its own characters
        (Omniglot) with its own seed; evaluation does not read batches (`evaluate_model`).
        """
        if not training:
            raise ValueError("ContrastiveTask evaluates with `evaluate_model` (probes and "
                             "few-shot episodes), not with evaluation batches.")
        data = self.config.data
        batch, shard, num_shards, replicas = data.global_batch_size, 0, 1, 1
        if input_context is not None:
            batch = input_context.get_per_replica_batch_size(batch)
            shard, num_shards = input_context.input_pipeline_id, input_context.num_input_pipelines
            replicas = input_context.num_replicas_in_sync
        seed = self.seed * 1009 + shard
        if data.source == "digits":
            images = self.digits.train_images[shard::num_shards]
            labels = self.digits.train_labels[shard::num_shards]
            if batch > len(images):
                raise ValueError(
                    f"The per-replica batch of {batch} images exceeds the {len(images)} digits "
                    "training images of this input pipeline. Lower task.data.global_batch_size.")
            examples = shuffled_epochs(tf.data.Dataset.from_tensor_slices((images, labels)),
                                       len(images), seed)
        else:
            if data.classes_per_batch % replicas:
                raise ValueError(
                    f"`task.data.classes_per_batch={data.classes_per_batch}` must be a multiple "
                    f"of the {replicas} replicas: each replica's batch holds whole characters.")
            ways = data.classes_per_batch // replicas
            per_class = batch // ways
            episodes = episode_dataset(self.classes(data.train_split), ways, per_class - 1, 1,
                                       seed=seed, rotations=data.rotations)
            examples = episodes.map(lambda e: (
                tf.concat([e[SUPPORT_X], e[QUERY_X]], 0),
                tf.concat([e[SUPPORT_Y], e[QUERY_Y]], 0))).unbatch()
        views = examples.enumerate().map(self._two_views(seed), num_parallel_calls=tf.data.AUTOTUNE,
                                         deterministic=True)
        return views.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    # ----------------------------------------------------------------------------- model
    def num_references(self) -> int:
        return min(self.config.evaluation.ood_max_references, len(self.train_images()))

    def reference_images(self) -> np.ndarray:
        """The training images whose embeddings the OOD score compares with (a seeded subset)."""
        images = self.train_images()
        rng = np.random.default_rng(self.config.evaluation.subset_seed)
        return images[np.sort(rng.choice(len(images), self.num_references(), replace=False))]

    def build_model(self) -> EmbeddingModel:
        keras.utils.set_random_seed(self.seed)
        model = self.config.model
        encoder = conv4(self.image_shape(), filters=model.filters, pool_blocks=model.pool_blocks,
                        name="encoder")
        scorer = KNNOODScorer(self.num_references(), self.config.evaluation.ood_neighbors,
                              self.config.evaluation.ood_quantile, dtype="float32", name="ood")
        return EmbeddingModel(encoder, model.projection_units, ood_scorer=scorer,
                              name=f"{model.loss}_embedding")

    def contrastive_losses(self, labels, projections) -> tf.Tensor:
        """Per-example losses `(b,)` of projections `(b, 2, p)`."""
        model = self.config.model
        if model.loss == "supcon":
            return supervised_contrastive(labels, projections, model.temperature)
        return nt_xent(projections, model.temperature)

    # ----------------------------------------------------------------- per-replica steps
    def train_step(self, inputs, model: EmbeddingModel, optimizer, loss_metric) -> None:
        views = inputs[VIEWS]
        batch = tf.shape(views)[0]
        # View-major: both views go through the encoder in one call, BatchNorm sees all 2b.
        images = tf.concat([views[:, 0], views[:, 1]], axis=0)
        with tf.GradientTape() as tape:
            z = model(images, training=True)
            z = tf.transpose(tf.reshape(z, [2, batch, -1]), [1, 0, 2])
            loss = tf.nn.compute_average_loss(self.contrastive_losses(inputs[LABELS], z),
                                              global_batch_size=self.config.data.global_batch_size)
            scaled = optimizer.scale_loss(loss)
        variables = model.trainable_variables
        apply_gradients(optimizer, zip(tape.gradient(scaled, variables), variables, strict=True),
                        loss)
        loss_metric.update_state(loss * tf.distribute.get_replica_context().num_replicas_in_sync)

    # -------------------------------------------------------------------------- evaluation
    def adapt_ood_scorer(self, model: EmbeddingModel) -> None:
        """Fills the OOD scorer with the current embeddings of the reference images."""
        model.ood_scorer.adapt(embed_images(model, self.reference_images()))

    def evaluate_model(self, model: EmbeddingModel, strategy=None) -> dict[str, float]:
        """Probe / fine-tune accuracies (digits) or few-shot accuracy (Omniglot), and OOD rate.

        Runs on the host's default device: the evaluation sets are small.
        """
        del strategy
        self.adapt_ood_scorer(model)
        if self.config.data.source == "digits":
            results = self._evaluate_digits(model)
            eval_images = self.digits.test_images
        else:
            results = self.few_shot_accuracy(model.encoder)
            eval_images = self.ood_eval_images()
        flagged = model.ood_scorer.is_outlier(embed_images(model, eval_images))
        results["ood/eval_outlier_fraction"] = float(np.mean(keras.ops.convert_to_numpy(flagged)))
        return results

    def ood_eval_images(self) -> np.ndarray:
        """As many images of the evaluation characters as the OOD score has references."""
        images = self.classes(self.config.data.eval_split).examples
        rng = np.random.default_rng(self.config.evaluation.subset_seed + 1)
        count = min(len(images), self.num_references())
        return images[np.sort(rng.choice(len(images), count, replace=False))]

    def _evaluate_digits(self, model: EmbeddingModel) -> dict[str, float]:
        evaluation, digits = self.config.evaluation, self.digits
        train_h = embed_images(model, digits.train_images)
        test_h = embed_images(model, digits.test_images)
        augment_fn = self.augment if evaluation.finetune_augment else None
        results = {}
        for k in evaluation.labels_per_class:
            ids = labelled_subset(digits.train_labels, k, evaluation.subset_seed)
            results[f"probe/acc_{k}_per_class"] = probe_accuracy(
                train_h[ids], digits.train_labels[ids], test_h, digits.test_labels,
                evaluation.probe_c)
            runs = [("finetune", True)] + ([("scratch", False)] if evaluation.scratch_baseline
                                           else [])
            for prefix, pretrained in runs:
                # Seeds the new head (and, from scratch, the encoder) per budget.
                keras.utils.set_random_seed(self.seed + k)
                results[f"{prefix}/acc_{k}_per_class"] = fine_tune_accuracy(
                    model.classifier(NUM_CLASSES, pretrained=pretrained), digits.train_images[ids],
                    digits.train_labels[ids], digits.test_images, digits.test_labels,
                    steps=evaluation.finetune_steps,
                    learning_rate=evaluation.finetune_learning_rate,
                    batch_size=evaluation.finetune_batch_size, augment_fn=augment_fn,
                    seed=self.seed + k)
        return results

    def few_shot_accuracy(self, encoder: keras.Model) -> dict[str, float]:
        """Cosine nearest-prototype accuracy of `encoder` on the evaluation episodes.

        Every episode of `evaluation.episodes` (rounded up to whole meta-batches) classifies
        each query by its most cosine-similar support class mean; the mean accuracy is
        reported with the half-width of its 95% confidence interval (`..._ci95`).
        """
        data, evaluation = self.config.data, self.config.evaluation
        batch = evaluation.episode_batch_size
        episodes = episode_dataset(
            self.classes(data.eval_split), evaluation.num_ways, evaluation.num_shots,
            evaluation.num_queries, meta_batch_size=batch, seed=evaluation.episode_seed,
            rotations=data.rotations, num_episodes=math.ceil(evaluation.episodes / batch) * batch)
        learner = PrototypicalNetwork(encoder, distance="cosine")
        step = tf.function(lambda e: learner.update_episode_metrics(e, learner(e)))
        for episode in episodes:
            step(episode)
        name = f"fewshot/acc_{evaluation.num_ways}way_{evaluation.num_shots}shot"
        result = learner.score_tracker.result()
        return {name: float(result["accuracy"]), f"{name}_ci95": float(result["accuracy_ci95"])}

    # ---------------------------------------------------------------------------- export
    def input_signature(self) -> dict[str, tf.TensorSpec]:
        return {IMAGES: tf.TensorSpec((None, *self.image_shape()), tf.float32)}

    def serve_fn(self, model: EmbeddingModel):
        """`serving_default`: `{"embedding": (batch, d)}`, L2-normalised encoder outputs.

        Images must hold intensities in `[0, 1]`, as in training.
        """
        def embed(inputs):
            images = _checked_images(SERVING_DEFAULT, inputs)
            return {"embedding": model.embed(images, training=False)}

        return embed

    def extra_endpoints(self, model: EmbeddingModel) -> dict:
        """`ood_score`: `{"ood_score": (batch,), "is_outlier": (batch,) bool}`.

        The scorer is refilled from the current weights first, so the served references are
        the embeddings of this model, whatever the checkpoint held.
        """
        self.adapt_ood_scorer(model)

        def score(inputs):
            scores = model.ood_score(_checked_images("ood_score", inputs))
            return {"ood_score": scores, "is_outlier": scores > model.ood_scorer.threshold}

        return {"ood_score": (score, self.input_signature())}

    def serving_examples(self, num: int) -> dict[str, dict[str, np.ndarray]]:
        """`{signature: inputs}` of `num` real evaluation images, for the warmup file."""
        check_positive_int("num", num)
        if self.config.data.source == "digits":
            images = self.digits.test_images[:num]
        else:
            images = self.classes(self.config.data.eval_split).examples[:num]
        inputs = {IMAGES: images.astype(np.float32)}
        return {SERVING_DEFAULT: inputs, "ood_score": inputs}


def _checked_images(endpoint: str, inputs: dict) -> tf.Tensor:
    return gate(inputs, [unit_interval_check(endpoint, IMAGES, inputs[IMAGES])])[IMAGES]
