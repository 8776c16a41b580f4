"""Tests for tf_mtml.models.keras_file: every experiment's model as a safe `.keras` file."""

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import keras
import numpy as np
import pytest

from tf_mtml.configs import experiments
from tf_mtml.configs.contrastive import ContrastiveConfig
from tf_mtml.configs.meta import MetaLearningConfig
from tf_mtml.configs.multitask import MultiTaskConfig
from tf_mtml.configs.ranking import RankingConfig
from tf_mtml.data.census import census_path
from tf_mtml.data.data_dir import resolve_data_dir
from tf_mtml.models.embedding import EmbeddingModel
from tf_mtml.models.keras_file import load_keras_model, save_keras_model, unsafe_objects
from tf_mtml.models.multitask_model import MultiTaskModel
from tf_mtml.tasks.contrastive import VIEWS
from tf_mtml.tasks.factory import build_task

SYNTHETIC = ("task.data.num_train_examples=64,task.data.num_eval_examples=32,"
             "task.data.global_batch_size=16,task.data.input_dim=6,task.model.expert_units=[4],"
             "task.model.num_experts=3,task.model.tower_units=[3]")
CENSUS = ("task.data.global_batch_size=16,task.model.expert_units=[4],task.model.num_experts=2,"
          "task.model.tower_units=[3]")
RANKING = ("task.data.num_days=3,task.data.requests_per_day=40,task.data.num_users=30,"
           "task.data.list_size=6,task.data.new_videos_per_day=10,"
           "task.data.video_lifetime_days=3,task.data.global_batch_size=16,"
           "task.model.num_experts=2,task.model.expert_units=[8],task.model.tower_units=[4],"
           "task.ndcg_cutoffs=[3,5]")
SINUSOID = "task.data.meta_batch_size=2,task.model.hidden_units=[8]"
OMNIGLOT = ("task.data.data_dir={root},task.data.train_split=val,task.data.eval_split=test,"
            "task.data.num_ways=3,task.data.eval_num_ways=0,task.data.num_queries=2,"
            "task.data.meta_batch_size=2,task.model.filters=4,task.model.inner_steps=1,"
            "task.model.eval_inner_steps=1")
CONTRASTIVE = ("task.data.global_batch_size=8,task.model.filters=4,task.model.projection_units=[8],"
               "task.evaluation.ood_max_references=16,task.evaluation.ood_neighbors=2")
OMNIGLOT_VIEWS = "task.data.data_dir={root},task.data.train_split=val,task.data.classes_per_batch=4"
# Variants the registered experiments do not cover: every weighting's state, the task family's
# gradient-diagnostics metric, more architectures, mixed precision.
VARIANTS = [
    ("mmoe_synthetic", "task.model.weighting=cagrad,task.model.gradient_diagnostics=true"),
    ("mmoe_synthetic", "task.model.weighting=uncertainty,task.model.architecture=cgc"),
    ("mmoe_synthetic", "task.model.weighting=dwa,task.model.architecture=cross_stitch"),
    ("mmoe_synthetic", "task.model.weighting=gradnorm,task.model.architecture=soft_sharing,"
                       "task.tasks=[{name: y1, type: regression, standardize: true}, "
                       "{name: y2, type: regression}]"),
    ("mmoe_synthetic", "task.model.weighting=rlw,runtime.mixed_precision_dtype=mixed_bfloat16"),
]
CASES = [(name, "") for name in experiments.list_experiments()] + VARIANTS


def _data_root(source: str) -> str:
    try:
        root = resolve_data_dir()
        if source == "census_income":
            census_path(root)
        elif not os.path.isdir(os.path.join(root, "omniglot")):
            raise FileNotFoundError(f"{os.path.join(root, 'omniglot')} does not exist")
    except FileNotFoundError as e:
        pytest.skip(f"No {source} data: {e}")
    return root


def _tiny_overrides(task) -> str:
    """Overrides shrinking an experiment of any registered task family to a few examples."""
    source = getattr(task.data, "source", "")
    if isinstance(task, RankingConfig):
        return RANKING
    if isinstance(task, MultiTaskConfig):
        if source == "census_income":
            _data_root(source)
            return CENSUS
        return SYNTHETIC
    if isinstance(task, MetaLearningConfig):
        return SINUSOID if source == "sinusoid" else OMNIGLOT.format(root=_data_root(source))
    if isinstance(task, ContrastiveConfig):
        if source == "omniglot":
            return CONTRASTIVE + "," + OMNIGLOT_VIEWS.format(root=_data_root(source))
        return CONTRASTIVE
    raise AssertionError(f"No tiny overrides for task configs of type {type(task).__name__}; "
                         "add them to this test.")


def _build(name: str, extra: str):
    """The experiment's task and model (tiny, under its precision) and one real input batch.

    Every task family's `build_model` returns a built model (meta-learners run an episode).
    """
    params = experiments.get_experiment(name)
    params.override_from_string(_tiny_overrides(params.task))
    if extra:
        params.override_from_string(extra)
    params.validate()
    keras.mixed_precision.set_global_policy(params.runtime.mixed_precision_dtype)
    task = build_task(params)
    model = task.build_model()
    batch = next(iter(task.build_inputs(training=True)))
    if isinstance(batch, tuple):  # (features, labels)
        batch = batch[0]
    elif VIEWS in batch:  # two views of each image
        batch = batch[VIEWS][:, 0]
    if isinstance(model, EmbeddingModel):
        task.adapt_ood_scorer(model)
    return model, batch


def _perturb_weights(model: keras.Model, seed: int = 0) -> None:
    """Moves every weight off its initial value, so that a weight that does not load back
    cannot match by chance (zeros, ones, BatchNorm and label statistics included)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        value = keras.ops.convert_to_numpy(variable)
        if np.issubdtype(value.dtype, np.integer):
            step = rng.integers(1, 3, value.shape)
        else:
            step = rng.uniform(0.01, 0.05, value.shape)
        variable.assign((value + step).astype(value.dtype))


def _outputs(model: keras.Model, batch) -> dict:
    outputs = {"call": model(batch, training=False)}
    if isinstance(model, EmbeddingModel):
        outputs.update(embed=model.embed(batch), ood_score=model.ood_score(batch))
    if isinstance(model, MultiTaskModel):
        outputs["serve"] = model.serve(batch)
    return keras.tree.map_structure(keras.ops.convert_to_numpy, outputs)


def _config_json(model: keras.Model) -> str:
    return json.dumps(keras.saving.serialize_keras_object(model), sort_keys=True)


def _align_random_streams(model: keras.Model, loaded: keras.Model) -> None:
    """Keras saves weights, not `SeedGenerator` states: a model that samples at inference (the
    hallucinating ProtoNet's default) restarts its stream on load. Start both at one state."""
    states = [[v for v in m.variables if v.name == "seed_generator_state"]
              for m in (model, loaded)]
    for mine, theirs in zip(*states, strict=True):
        theirs.assign(mine)


@pytest.mark.parametrize("name, extra", CASES,
                         ids=[f"{n}-{e.split('=')[1].split(',')[0]}" if e else n
                              for n, e in CASES])
def test_experiment_models_round_trip_in_safe_mode(name, extra, tmp_path):
    model, batch = _build(name, extra)
    _perturb_weights(model)
    path = save_keras_model(model, tmp_path / "export" / "model.keras")
    assert path == str(tmp_path / "export" / "model.keras")
    assert os.listdir(tmp_path / "export") == ["model.keras"]
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is type(model)
    assert _config_json(loaded) == _config_json(model)
    assert len(loaded.weights) == len(model.weights) > 0
    for mine, theirs in zip(model.weights, loaded.weights, strict=True):
        assert (mine.name, mine.dtype) == (theirs.name, theirs.dtype)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(theirs),
                                      keras.ops.convert_to_numpy(mine))
    assert [m.name for m in loaded.metrics] == [m.name for m in model.metrics]
    _align_random_streams(model, loaded)
    expected, actual = _outputs(model, batch), _outputs(loaded, batch)
    assert keras.tree.flatten(expected)
    for mine, theirs in zip(keras.tree.flatten(expected), keras.tree.flatten(actual),
                            strict=True):
        assert np.all(np.isfinite(mine.astype("float32")))
        np.testing.assert_allclose(theirs.astype("float32"), mine.astype("float32"), atol=1e-6)


def _double(x):
    return 2.0 * x


def _functional(*layers, name="net") -> keras.Model:
    inputs = keras.Input((3,), name="x")
    outputs = inputs
    for layer in layers:
        outputs = layer(outputs)
    return keras.Model(inputs, outputs, name=name)


@pytest.mark.parametrize("function", [lambda x: 2.0 * x, _double], ids=["lambda", "named"])
def test_lambda_layer_is_refused_and_nothing_is_written(function, tmp_path):
    model = _functional(keras.layers.Dense(2, name="dense"),
                        keras.layers.Lambda(function, name="double"))
    path = tmp_path / "model.keras"
    with pytest.raises(ValueError, match=r"(?s)Model 'net' was not written to .*model\.keras.*"
                                         r"Functional 'net' > Lambda 'double': a Lambda layer.*"
                                         r"register_keras_serializable"):
        save_keras_model(model, path)
    assert os.listdir(tmp_path) == []


def test_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "model.keras"
    good = _functional(keras.layers.Dense(2, name="dense"))
    save_keras_model(good, path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="Lambda 'double'"):
        save_keras_model(_functional(keras.layers.Lambda(_double, name="double")), path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["model.keras"]
    x = np.arange(6, dtype="float32").reshape(2, 3)
    np.testing.assert_array_equal(load_keras_model(path)(x), good(x))


@pytest.mark.filterwarnings("ignore:The object being serialized includes a `lambda`")
def test_lambdas_in_layer_and_compile_configs_are_named(tmp_path):
    model = _functional(keras.layers.Dense(2, activation=lambda x: x, name="out"))
    model.compile(optimizer="sgd", loss=lambda y, p: keras.ops.mean(p))
    with pytest.raises(ValueError) as error:
        save_keras_model(model, tmp_path / "model.keras")
    message = str(error.value)
    assert "Functional 'net' > Dense 'out', key `activation`: a Python lambda" in message
    assert "Functional 'net', key `loss`: a Python lambda" in message
    assert os.listdir(tmp_path) == []


class Unregistered(keras.layers.Layer):
    def call(self, x):
        return x


@keras.saving.register_keras_serializable(package="tf_mtml_tests")
class ScaleWithoutConfig(keras.layers.Layer):
    """Its `get_config` forgets the required `factor`."""

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return self.factor * x

    def get_config(self):
        return super().get_config()


@pytest.mark.parametrize("make_layer, message", [
    (lambda: Unregistered(name="plain"), r"Could not locate class 'Unregistered'"),
    (lambda: ScaleWithoutConfig(2.0, name="scale"),
     r"ScaleWithoutConfig.*could not be deserialized"),
], ids=["unregistered", "incomplete_config"])
def test_objects_that_do_not_load_in_safe_mode_are_refused(make_layer, message, tmp_path):
    with pytest.raises(ValueError, match=r"(?s)does not load with `keras.saving.load_model\(path, "
                                         rf"safe_mode=True\)`.*{message}.*get_config"):
        save_keras_model(_functional(make_layer()), tmp_path / "model.keras")
    assert os.listdir(tmp_path) == []


@keras.saving.register_keras_serializable(package="tf_mtml_tests")
class Wrapper(keras.Model):
    """Its `get_config` forgets `extra_units`, so the loaded model lacks the extra layer."""

    def __init__(self, extra_units=None, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(2)
        self.extra = None if extra_units is None else keras.layers.Dense(extra_units)

    def call(self, x):
        return self.dense(x) if self.extra is None else (self.dense(x), self.extra(x))

    def get_config(self):
        return super().get_config()


def test_state_the_config_does_not_rebuild_is_caught(tmp_path):
    model = Wrapper(extra_units=4, name="wrapper")
    model(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match=r"loads with 2 weights, but the model has 4"):
        save_keras_model(model, tmp_path / "model.keras")
    assert os.listdir(tmp_path) == []


@keras.saving.register_keras_serializable(package="tf_mtml_tests")
class Offset(keras.layers.Layer):
    """Its `get_config` drops the base config, `dtype` included: float64 comes back float32."""

    def build(self, input_shape):
        self.offset = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x + self.offset

    def get_config(self):
        return {"name": self.name}


def test_weights_that_load_back_differently_are_caught(tmp_path):
    inputs = keras.Input((3,), dtype="float64")
    model = keras.Model(inputs, Offset(name="offset", dtype="float64")(inputs), name="net")
    model.weights[0].assign(np.full(3, 0.1))
    # Keras numbers unnamed weights per process ('variable', 'variable_1', ...).
    with pytest.raises(ValueError, match=r"does not restore weight 'offset/variable(_\d+)?' "
                                         r"\(3,\) float64: it loads .* float32 with other values"):
        save_keras_model(model, tmp_path / "model.keras")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("make_model, path, message", [
    (lambda: keras.layers.Dense(2), "m.keras", r"expected a `keras.Model`.*model=Dense"),
    (lambda: Wrapper(name="w"), "m.keras", r"unbuilt model 'w'.*Received: built=False"),
    (_functional, "m.h5", r"ending in '.keras'.*Received: path='.*m.h5'"),
    (_functional, "dir.keras", r"expected a file, but '.*dir.keras' is a directory"),
], ids=["layer", "unbuilt", "suffix", "directory"])
def test_save_rejects_bad_arguments(make_model, path, message, tmp_path):
    (tmp_path / "dir.keras").mkdir()
    with pytest.raises(ValueError, match=message):
        save_keras_model(make_model(), tmp_path / path)
    assert os.listdir(tmp_path) == ["dir.keras"]


def test_load_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No `.keras` file at '.*missing.keras'"):
        load_keras_model(tmp_path / "missing.keras")
    (tmp_path / "text.keras").write_text("not a zip")
    with pytest.raises(ValueError, match=r"'.*text.keras' is not a `.keras` model file"):
        load_keras_model(tmp_path / "text.keras")
    with zipfile.ZipFile(tmp_path / "other.keras", "w") as archive:
        archive.writestr("weights.h5", b"")
    with pytest.raises(ValueError, match=r"zip archive without config.json"):
        load_keras_model(tmp_path / "other.keras")
    with pytest.raises(ValueError, match=r"ending in '.keras'"):
        load_keras_model(tmp_path / "model.h5")


def test_load_refuses_a_lambda_file_written_by_plain_keras(tmp_path):
    path = tmp_path / "model.keras"
    _functional(keras.layers.Lambda(_double, name="double"), name="raw").save(path)
    with pytest.raises(ValueError, match=r"Functional 'raw' > Lambda 'double': a Lambda layer"):
        load_keras_model(path)


def test_unsafe_objects_walks_nested_configs():
    config = {"class_name": "Outer", "config": {"name": "o", "layers": [
        {"class_name": "Inner", "config": {"name": "i", "fn": {"class_name": "__lambda__"}}},
        {"class_name": "Dense", "config": {"name": "d", "activation": "relu"}}]}}
    assert unsafe_objects(config) == ["Outer 'o' > Inner 'i', key `fn`: a Python lambda"]
    assert unsafe_objects({"class_name": "Dense", "config": {"name": "d"}}) == []


FRESH_PROCESS = textwrap.dedent("""
    import json, sys
    import numpy as np
    from keras.src.saving import object_registration
    from tf_mtml.models.keras_file import load_keras_model
    model = load_keras_model(sys.argv[1])
    served = model.serve({"features": np.load(sys.argv[2])})
    np.savez(sys.argv[3], **{k: np.asarray(v) for k, v in served.items()})
    print(json.dumps(sorted(k for k in object_registration.GLOBAL_CUSTOM_OBJECTS
                            if k.startswith("tf_mtml>"))))
""")


@pytest.mark.slow
def test_a_fresh_process_knows_every_registered_class(tmp_path):
    """Importing `keras_file` alone registers every tf_mtml class a file may name."""
    import importlib
    import pkgutil

    import tf_mtml

    for module in pkgutil.walk_packages(tf_mtml.__path__, "tf_mtml."):
        importlib.import_module(module.name)
    registered = sorted(k for k in keras.saving.get_custom_objects() if k.startswith("tf_mtml>"))
    model, batch = _build("mmoe_synthetic", "task.model.weighting=uncertainty")
    _perturb_weights(model)
    path = save_keras_model(model, tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", batch["features"])
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, path, str(tmp_path / "x.npy"),
         str(tmp_path / "served.npz")],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == registered
    served = np.load(tmp_path / "served.npz")
    for name, value in model.serve(batch).items():
        np.testing.assert_allclose(served[name], keras.ops.convert_to_numpy(value), atol=1e-6)
