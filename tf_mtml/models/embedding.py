"""An encoder with a projection head, the model of contrastive representation learning.

SimCLR (Chen et al. 2020, https://arxiv.org/abs/2002.05709) and SupCon (Khosla et al. 2020,
https://arxiv.org/abs/2004.11362) train `z = g(f(x))`: an encoder `f` and a small MLP
projection head `g`, with the contrastive loss on `z`. Downstream tasks then use the encoder
output `h = f(x)`, not `z`: the head learns to discard what the augmentations change
(position, scale, contrast), which `h` keeps and a classifier may need (SimCLR, sec. 4.2).
"""

from __future__ import annotations

import keras

from tf_mtml.layers._validation import check_positive_int, check_units
from tf_mtml.layers.mlp import MLP
from tf_mtml.models.ood import KNNOODScorer


@keras.saving.register_keras_serializable(package="tf_mtml")
class EmbeddingModel(keras.Model):
    """Encoder `f` + projection head `g`: `call` returns `z = g(f(x))`, `embed` returns `h`.

    The head is `MLP(projection_units[:-1])` (ReLU) followed by a linear
    `Dense(projection_units[-1])`, SimCLR's two-layer head by default; `projection_units=()`
    trains the loss on `h` itself. `embed` returns the L2-normalised, flattened encoder output,
    the vector served for retrieval and fed to linear probes and nearest-prototype
    classifiers. Both outputs are float32 under any dtype policy. An optional
    `KNNOODScorer` scores how far inputs lie from the training embeddings (`ood_score`); its
    reference embeddings are weights of this model, so they travel with its exports.

    Args:
        encoder: A built Keras model mapping `(batch, *image_shape)` to `(batch, ...)`
            features, e.g. `tf_mtml.meta.backbones.conv4(...)`.
        projection_units: Widths of the projection head; the last one is linear.
        ood_scorer: Optional `KNNOODScorer` over the normalised embeddings; fill it with
            `model.ood_scorer.adapt(model.embed(train_images))`.
        **kwargs: `keras.Model` keyword arguments (`name`, `dtype`).

    Call arguments:
        images: `(batch, *image_shape)`.
        training: Passed to the encoder (BatchNorm, dropout).

    Returns:
        Projections `z` `(batch, projection_units[-1])` float32, unnormalised (contrastive
        losses normalise them).

    Example:
        ```python
        model = EmbeddingModel(conv4((8, 8, 1), filters=32, pool_blocks=3), (64, 32))
        z = model(images, training=True)        # (batch, 32), for NT-Xent / SupCon
        h = model.embed(images)                 # (batch, 32), unit norm, for retrieval
        classifier = model.classifier(10)       # encoder copy + new softmax head
        ```
    """

    def __init__(self, encoder: keras.Model, projection_units: tuple[int, ...] = (128, 64),
                 ood_scorer: KNNOODScorer | None = None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(encoder, keras.Model) or not encoder.built:
            raise ValueError(
                "Received an invalid value for `encoder`, expected a built Keras model (a "
                "functional model such as `conv4(input_shape)` is built on creation). "
                f"Received: encoder={encoder!r}"
            )
        self.encoder = encoder
        self.projection_units = check_units("projection_units", projection_units)
        self.flatten = keras.layers.Flatten(dtype=self.dtype_policy, name="flatten")
        self.hidden = MLP(self.projection_units[:-1], dtype=self.dtype_policy,
                          name="projection_hidden")
        self.projection = (keras.layers.Dense(self.projection_units[-1],
                                              dtype=self.dtype_policy, name="projection")
                           if self.projection_units else None)
        self.normalize = keras.layers.UnitNormalization(dtype="float32", name="l2_normalize")
        if ood_scorer is not None and not isinstance(ood_scorer, KNNOODScorer):
            raise ValueError(
                "Received an invalid value for `ood_scorer`, expected None or a KNNOODScorer. "
                f"Received: ood_scorer={ood_scorer!r}")
        self.ood_scorer = ood_scorer
        self.build(encoder.input_shape)

    @property
    def embedding_dim(self) -> int:
        """Size `d` of the flattened encoder output `h`."""
        shape = self.encoder.compute_output_shape((None, *self.encoder.input_shape[1:]))
        size = 1
        for dim in shape[1:]:
            size *= dim
        return size

    def build(self, input_shape):
        shape = (None, self.embedding_dim)
        self.flatten.build(self.encoder.output_shape)
        self.hidden.build(shape)
        if self.projection is not None:
            self.projection.build(self.hidden.compute_output_shape(shape))
        self.normalize.build(shape)
        if self.ood_scorer is not None and not self.ood_scorer.built:
            self.ood_scorer.build(shape)
        self.built = True

    def encode(self, images, training=None):
        """Flattened encoder output `h` `(batch, d)`, in the compute dtype, unnormalised."""
        return self.flatten(self.encoder(images, training=training))

    def embed(self, images, training=None):
        """L2-normalised encoder output `h / |h|` `(batch, d)` float32."""
        return self.normalize(keras.ops.cast(self.encode(images, training), "float32"))

    def ood_score(self, images):
        """Out-of-distribution scores `(batch,)` float32 of images (see `KNNOODScorer`)."""
        if self.ood_scorer is None:
            raise ValueError(
                "This EmbeddingModel has no OOD scorer; build it with "
                "`ood_scorer=KNNOODScorer(num_references=...)` and `adapt` the scorer.")
        return self.ood_scorer(self.embed(images, training=False))

    def call(self, images, training=None):
        z = self.hidden(self.encode(images, training), training=training)
        if self.projection is not None:
            z = self.projection(z)
        return keras.ops.cast(z, "float32")

    def compute_output_shape(self, input_shape):
        units = self.projection_units[-1] if self.projection_units else self.embedding_dim
        return (input_shape[0], units)

    def classifier(self, num_classes: int, pretrained: bool = True,
                   name: str = "classifier") -> keras.Model:
        """A new model: a copy of the encoder and a linear softmax head of `num_classes`.

        The copy never shares variables with this model, so fine-tuning it leaves the
        pretrained encoder untouched.

        Args:
            num_classes: Number of output logits.
            pretrained: Copy this encoder's weights (fine-tuning), or keep the copy's fresh
                initialisation (the same architecture trained from scratch).
            name: Name of the returned model.

        Returns:
            A functional `keras.Model` mapping images to `(batch, num_classes)` logits.
        """
        check_positive_int("num_classes", num_classes)
        encoder = keras.models.clone_model(self.encoder)
        if pretrained:
            encoder.set_weights(self.encoder.get_weights())
        features = keras.layers.Flatten(name="head_flatten")(encoder.output)
        logits = keras.layers.Dense(num_classes, dtype="float32", name="logits")(features)
        return keras.Model(encoder.input, logits, name=name)

    def get_config(self) -> dict:
        return {**super().get_config(),
                "encoder": keras.saving.serialize_keras_object(self.encoder),
                "projection_units": self.projection_units,
                "ood_scorer": (None if self.ood_scorer is None
                               else keras.saving.serialize_keras_object(self.ood_scorer))}

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        if config.get("ood_scorer") is not None:
            config["ood_scorer"] = keras.saving.deserialize_keras_object(config["ood_scorer"])
        return cls(**config)
