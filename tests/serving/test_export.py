"""Tests for tf_mtml.serving.export: TF Serving layout, SignatureDef names, served parity."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from tests.serving.conftest import INPUT_SIGNATURE
from tf_mtml.serving import export
from tf_mtml.serving.export import (
    export_saved_model,
    latest_version,
    list_versions,
    read_signature_defs,
)
from tf_mtml.serving.session_loader import (
    run_signature_with_session_loader,
    serve_in_fresh_process,
)


class TwoHeadModel(keras.Model):
    """Subclassed model whose `call` returns raw logits; serving adds the sigmoid."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.embedding = keras.layers.Embedding(3, 4)
        self.logit_head = keras.layers.Dense(1)
        self.value_head = keras.layers.Dense(2)

    def call(self, inputs):
        hidden = inputs["features"] + self.embedding(inputs["task_id"])
        return {"logit": self.logit_head(hidden), "value": self.value_head(hidden)}


def _signature_io(export_dir, key="serving_default"):
    signature = read_signature_defs(export_dir)[key]
    inputs = {
        name: (info.dtype, [d.size for d in info.tensor_shape.dim])
        for name, info in signature.inputs.items()
    }
    return signature, inputs, set(signature.outputs)


def test_functional_model_is_served_with_named_signature(tmp_path, functional_model, batch):
    base = str(tmp_path / "ranker")
    path = export_saved_model(functional_model, base, input_signature=INPUT_SIGNATURE)

    assert path == os.path.join(base, "1")
    signature, inputs, outputs = _signature_io(path)
    assert signature.method_name == "tensorflow/serving/predict"
    assert inputs == {
        "features": (types_pb2.DT_FLOAT, [-1, 4]),
        "task_id": (types_pb2.DT_INT32, [-1]),
    }
    assert outputs == {"score", "logits"}

    served = serve_in_fresh_process(path, batch)
    expected = functional_model(batch, training=False)
    assert set(served) == {"score", "logits"}
    for name in served:
        np.testing.assert_allclose(served[name], np.asarray(expected[name]), atol=1e-5)


def test_subclassed_model_with_custom_serve_fn(tmp_path, batch):
    keras.utils.set_random_seed(1)
    model = TwoHeadModel()
    raw = model(batch)

    def serve_fn(inputs):
        outputs = model(inputs, training=False)
        return {"probability": keras.ops.sigmoid(outputs["logit"]), "value": outputs["value"]}

    path = export_saved_model(
        model, str(tmp_path), input_signature=INPUT_SIGNATURE, serve_fn=serve_fn
    )
    _, inputs, outputs = _signature_io(path)
    assert set(inputs) == {"features", "task_id"}
    assert outputs == {"probability", "value"}

    served = serve_in_fresh_process(path, batch)
    logit = np.asarray(raw["logit"], np.float64)
    np.testing.assert_allclose(served["probability"], 1.0 / (1.0 + np.exp(-logit)), atol=1e-5)
    np.testing.assert_allclose(served["value"], np.asarray(raw["value"]), atol=1e-5)


def test_extra_endpoint_is_its_own_signature(tmp_path, functional_model, batch):
    def task_logits(inputs):
        return {"task_logits": functional_model(inputs, training=False)["logits"]}

    def scaled(inputs):
        return {"doubled": inputs["features"] * 2.0}

    path = export_saved_model(
        functional_model,
        str(tmp_path),
        input_signature=INPUT_SIGNATURE,
        extra_endpoints={
            "task_logits": (task_logits, INPUT_SIGNATURE),
            "scaled": (scaled, {"features": tf.TensorSpec((None, 4), tf.float32)}),
        },
    )
    assert set(read_signature_defs(path)) == {"serving_default", "task_logits", "scaled"}
    _, inputs, outputs = _signature_io(path, "scaled")
    assert inputs == {"features": (types_pb2.DT_FLOAT, [-1, 4])}
    assert outputs == {"doubled"}

    served = run_signature_with_session_loader(path, batch, "task_logits")
    expected = np.asarray(functional_model(batch)["logits"])
    np.testing.assert_allclose(served["task_logits"], expected, atol=1e-5)
    served = run_signature_with_session_loader(path, {"features": batch["features"]}, "scaled")
    np.testing.assert_allclose(served["doubled"], 2.0 * batch["features"], atol=1e-6)


def test_versions_increment_and_existing_version_is_refused(tmp_path, functional_model):
    base = str(tmp_path)
    first = export_saved_model(functional_model, base, input_signature=INPUT_SIGNATURE)
    second = export_saved_model(functional_model, base, input_signature=INPUT_SIGNATURE)
    assert (first, second) == (os.path.join(base, "1"), os.path.join(base, "2"))
    assert list_versions(base) == [1, 2]

    saved_pb = os.path.join(first, "saved_model.pb")
    mtime = os.path.getmtime(saved_pb)
    with pytest.raises(FileExistsError, match="Version 1 already exists.*next free: 3"):
        export_saved_model(functional_model, base, input_signature=INPUT_SIGNATURE, version=1)
    assert os.path.getmtime(saved_pb) == mtime

    export_saved_model(functional_model, base, input_signature=INPUT_SIGNATURE, version=7)
    assert list_versions(base) == [1, 2, 7]
    assert latest_version(base) == 7
    assert sorted(os.listdir(base)) == ["1", "2", "7"]


def test_list_versions_skips_what_tf_serving_skips(tmp_path, functional_model):
    for name in ["1", "10", "02", "007", ".tmp-export-11-abc", "assets", "v3"]:
        os.makedirs(tmp_path / name)
    (tmp_path / ".tmp-export-11-abc" / "saved_model.pb").write_bytes(b"half written")

    assert list_versions(str(tmp_path)) == [1, 2, 7, 10]
    assert latest_version(str(tmp_path)) == 10
    path = export_saved_model(functional_model, str(tmp_path), input_signature=INPUT_SIGNATURE)
    assert path == str(tmp_path / "11")
    # "007" is version 7 for TF Serving too, so it cannot be written again as "7".
    with pytest.raises(FileExistsError, match="Version 7 already exists"):
        export_saved_model(
            functional_model, str(tmp_path), input_signature=INPUT_SIGNATURE, version=7
        )


def test_missing_export_base_has_no_versions(tmp_path):
    assert list_versions(str(tmp_path / "missing")) == []
    assert latest_version(str(tmp_path / "missing")) is None


def test_failed_export_leaves_nothing_behind(tmp_path, functional_model, monkeypatch):
    def fail(*args):
        raise RuntimeError("injected failure after write_out")

    monkeypatch.setattr(export, "_verify_signature", fail)
    with pytest.raises(RuntimeError, match="injected failure"):
        export_saved_model(functional_model, str(tmp_path), input_signature=INPUT_SIGNATURE)
    assert os.listdir(tmp_path) == []


def test_signature_verification_detects_wrong_names(tmp_path, functional_model):
    path = export_saved_model(functional_model, str(tmp_path), input_signature=INPUT_SIGNATURE)
    with pytest.raises(
        ValueError,
        match=r"Expected inputs \['features', 'task_id'\] and outputs "
        r"\['score'\]\. Received: .*outputs \['logits', 'score'\]",
    ):
        export._verify_signature(path, "serving_default", {"features", "task_id"}, {"score"})


def test_serve_fn_must_return_a_dict(tmp_path):
    x = keras.Input((4,), name="x")
    model = keras.Model({"x": x}, keras.layers.Dense(2)(x))  # A single tensor output.
    signature = {"x": tf.TensorSpec((None, 4), tf.float32)}
    with pytest.raises(ValueError, match="must return a dict.*Received: list"):
        export_saved_model(
            model, str(tmp_path), input_signature=signature, serve_fn=lambda d: [model(d)]
        )
    with pytest.raises(ValueError, match="must return a dict"):
        export_saved_model(model, str(tmp_path), input_signature=signature)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("signature", "match"),
    [
        ({}, "non-empty dict"),
        ({"features": tf.TensorSpec((8, 4), tf.float32)}, r"first dimension must be None.*8, 4"),
        ({"features": tf.TensorSpec((), tf.float32)}, "rank >= 1"),
        ({"features": np.zeros((1, 4))}, r"Received: array"),
        ({"features": tf.TensorSpec((None, 4), name="x")}, "named 'x' under key 'features'"),
        ({"task id": tf.TensorSpec((None,), tf.int32)}, "Received: key='task id'"),
    ],
)
def test_invalid_input_signature_is_rejected(tmp_path, functional_model, signature, match):
    with pytest.raises(ValueError, match=match):
        export_saved_model(functional_model, str(tmp_path), input_signature=signature)


@pytest.mark.parametrize("version", [-1, "2", True, 1.0])
def test_invalid_version_is_rejected(tmp_path, functional_model, version):
    with pytest.raises(ValueError, match=f"Received: version={version!r}"):
        export_saved_model(
            functional_model, str(tmp_path), input_signature=INPUT_SIGNATURE, version=version
        )


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"serving_default": (lambda d: d, INPUT_SIGNATURE)}, "Rename the extra endpoint"),
        ({"embed": lambda d: d}, "extra endpoint 'embed', expected a tuple"),
    ],
)
def test_invalid_extra_endpoint_is_rejected(tmp_path, functional_model, extra, match):
    with pytest.raises(ValueError, match=match):
        export_saved_model(
            functional_model,
            str(tmp_path),
            input_signature=INPUT_SIGNATURE,
            extra_endpoints=extra,
        )


def test_every_signature_checks_its_input_shapes_in_the_graph(tmp_path, functional_model, batch):
    path = export_saved_model(
        functional_model, str(tmp_path), input_signature=INPUT_SIGNATURE,
        extra_endpoints={"scaled": (lambda d: {"doubled": d["features"] * 2.0},
                                    {"features": tf.TensorSpec((None, 4), tf.float32)})})
    for signature, inputs in [("serving_default", {**batch, "task_id": batch["task_id"][:, None]}),
                              ("scaled", {"features": batch["features"][:, :2]})]:
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"of signature `{signature}` must have shape"):
            run_signature_with_session_loader(path, inputs, signature)
