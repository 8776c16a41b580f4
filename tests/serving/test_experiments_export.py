"""Every registered experiment exports for TF Serving and serves its warmup requests.

Each experiment is built tiny and exported through `tf_mtml.train.run.export_model` (the code path
of `--mode=export`); ONE fresh process then loads every version with the session-based loader
and replays its warmup records, whose outputs must equal the Keras model's on the same inputs.
The served graphs' input checks are exercised on the same exports, under the session loader.
"""

import dataclasses
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.configs import experiments  # noqa: F401  (registers every experiment)
from tf_mtml.configs.contrastive import ContrastiveConfig
from tf_mtml.configs.meta import MetaLearningConfig
from tf_mtml.configs.multitask import MultiTaskConfig
from tf_mtml.configs.ranking import RankingConfig
from tf_mtml.configs.registry import get_experiment, list_experiments
from tf_mtml.data.data_dir import resolve_data_dir
from tf_mtml.serving.export import SERVING_DEFAULT, list_versions, read_signature_defs
from tf_mtml.serving.models_config import MODELS_CONFIG_FILE, parse_models_config
from tf_mtml.serving.session_loader import LoadedSavedModel, inputs_from_predict_request
from tf_mtml.serving.warmup import (
    WARMUP_DIR,
    WARMUP_FILE,
    read_warmup_requests,
    replay_warmup_in_fresh_process,
)
from tf_mtml.tasks.factory import build_task
from tf_mtml.train.run import build_trainer, export_model

NAMES = list_experiments()
SIGNATURES = {
    MultiTaskConfig: {"serving_default", "task_score"},
    RankingConfig: {"serving_default", "task_score"},
    ContrastiveConfig: {"serving_default", "ood_score"},
    MetaLearningConfig: {"serving_default", "few_shot"},
}
MULTITASK = ("task.data.num_train_examples=64,task.data.num_eval_examples=32,"
             "task.data.global_batch_size=16,task.data.input_dim=8,task.model.num_experts=2,"
             "task.model.expert_units=[4],task.model.tower_units=[4]")
CENSUS = ("task.data.global_batch_size=16,task.model.num_experts=2,task.model.expert_units=[4],"
          "task.model.tower_units=[4]")
RANKING = ("task.data.num_days=2,task.data.requests_per_day=8,task.data.num_users=10,"
           "task.data.list_size=4,task.data.new_videos_per_day=6,task.data.video_lifetime_days=2,"
           "task.data.global_batch_size=8,task.model.num_experts=2,task.model.expert_units=[4],"
           "task.model.tower_units=[4],task.ndcg_cutoffs=[2]")
CONTRASTIVE = ("task.data.global_batch_size=16,task.model.filters=4,"
               "task.model.projection_units=[4],task.evaluation.ood_neighbors=2,"
               "task.evaluation.ood_max_references=16")
CONTRASTIVE_OMNIGLOT = ("task.data.classes_per_batch=4,task.data.train_split=val,"
                        "task.evaluation.num_ways=2,task.evaluation.num_shots=1")
SINUSOID = ("task.data.meta_batch_size=2,task.data.eval_meta_batch_size=2,"
            "task.data.eval_episodes=2,task.model.hidden_units=[4],task.model.eval_inner_steps=1")
OMNIGLOT = ("task.data.train_split=val,task.data.eval_split=test,task.data.meta_batch_size=1,"
            "task.data.num_queries=1,task.data.eval_meta_batch_size=1,task.data.eval_episodes=1,"
            "task.data.eval_num_queries=1,task.model.filters=4,task.model.eval_inner_steps=1")


DATA_SOURCES = ("omniglot", "census_income")


class DataMissing(Exception):
    pass


def _source(params) -> str:
    return getattr(params.task.data, "source", "synthetic")


def _tiny_params(name: str):
    """The experiment shrunk to seconds; raises DataMissing when its data set is absent."""
    params = get_experiment(name)
    source = _source(params)
    overrides = {MultiTaskConfig: CENSUS if source == "census_income" else MULTITASK,
                 RankingConfig: RANKING, ContrastiveConfig: CONTRASTIVE,
                 MetaLearningConfig: SINUSOID if source == "sinusoid" else OMNIGLOT}
    override = overrides[type(params.task)]
    if isinstance(params.task, ContrastiveConfig) and source == "omniglot":
        override += "," + CONTRASTIVE_OMNIGLOT
    if source in DATA_SOURCES:
        try:
            override += f",task.data.data_dir={resolve_data_dir()}"
        except FileNotFoundError as e:
            raise DataMissing(f"{name} needs the {source} data: {e}") from e
    params.override_from_string(override)
    params.validate()
    return params


@dataclasses.dataclass
class Export:
    family: type
    model_dir: str
    export_dir: str
    requests: list
    expected: list
    served: list = dataclasses.field(default_factory=list)


def _numpy(outputs: dict) -> dict:
    return {k: keras.ops.convert_to_numpy(v) for k, v in outputs.items()}


def _export(name: str, model_dir: str) -> Export:
    params = _tiny_params(name)
    try:
        trainer = build_trainer(params, model_dir)
        export_dir = export_model(trainer, model_dir, model_name=name)
    except FileNotFoundError as e:
        if _source(params) not in DATA_SOURCES:
            raise
        raise DataMissing(f"{name}: {e}") from e  # Missing inside an existing data root.
    task, model = trainer.task, trainer.model
    functions = {SERVING_DEFAULT: task.serve_fn(model),
                 **{key: fn for key, (fn, _) in task.extra_endpoints(model).items()}}
    requests = read_warmup_requests(export_dir)
    expected = [_numpy(functions[r.model_spec.signature_name](inputs_from_predict_request(r)))
                for r in requests]
    return Export(type(params.task), model_dir, export_dir, requests, expected)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict:
    """`{name: Export or skip reason}`, every warmup replayed by one fresh process."""
    results = {}

    def export_dirs():
        for name in NAMES:
            try:
                results[name] = _export(name, str(tmp_path_factory.mktemp(name)))
            except DataMissing as e:
                results[name] = str(e)
                continue
            yield results[name].export_dir

    # The process loads each version while the next experiment is exported.
    served = replay_warmup_in_fresh_process(export_dirs())
    exported = [e for e in results.values() if isinstance(e, Export)]
    for export, outputs in zip(exported, served, strict=True):
        export.served = outputs
    return results


def _get(exports: dict, name: str) -> Export:
    if isinstance(exports[name], str):
        pytest.skip(exports[name])
    return exports[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_export_replays_its_warmup_like_the_keras_model(exports, name):
    export = _get(exports, name)
    base = os.path.dirname(export.export_dir)
    assert export.export_dir == os.path.join(export.model_dir, "export", "1")
    assert sorted(os.listdir(base)) == ["1", MODELS_CONFIG_FILE]
    assert list_versions(base) == [1]

    signatures = SIGNATURES[export.family]
    assert set(read_signature_defs(export.export_dir)) == signatures
    assert os.path.isfile(os.path.join(export.export_dir, WARMUP_DIR, WARMUP_FILE))
    # One record per signature, each a complete client request.
    assert [r.model_spec.signature_name for r in export.requests] == sorted(signatures)
    assert {r.model_spec.name for r in export.requests} == {name}

    assert len(export.served) == len(export.expected) == len(signatures)
    for request, served, expected in zip(export.requests, export.served, export.expected,
                                         strict=True):
        assert set(served) == set(expected), request.model_spec.signature_name
        for key, value in expected.items():
            if value.dtype.kind in "fc":
                np.testing.assert_allclose(served[key], value, atol=1e-5, err_msg=key)
            else:
                np.testing.assert_array_equal(served[key], value.astype(served[key].dtype))

    config = parse_models_config(open(os.path.join(base, MODELS_CONFIG_FILE)).read())
    assert [(c.name, c.base_path, c.model_platform)
            for c in config.model_config_list.config] == [(name, base, "tensorflow")]


@pytest.mark.slow
def test_warmup_inputs_are_real_examples_of_the_task(exports):
    """Spot checks per family: the recorded rows come from the task's own data."""
    export = _get(exports, "mmoe_synthetic")
    features = inputs_from_predict_request(export.requests[0])["features"]
    task = build_task(_tiny_params("mmoe_synthetic"))
    np.testing.assert_array_equal(features, task.arrays["eval"][0]["features"][:4])
    ids = inputs_from_predict_request(export.requests[1])["task_id"]
    np.testing.assert_array_equal(ids, [0, 1, 0, 1])

    export = _get(exports, "maml_sinusoid")
    episode = inputs_from_predict_request(export.requests[0])
    # A real sinusoid task: every target is a * sin(x - phase) for one amplitude and phase.
    x, y = episode["support_x"][:, 0].astype(np.float64), episode["support_y"][:, 0]
    design = np.stack([np.sin(x), np.cos(x)], axis=1)
    coefficients = np.linalg.lstsq(design, y, rcond=None)[0]
    np.testing.assert_allclose(design @ coefficients, y, atol=1e-4)


def _rejects(export_dir, inputs, signature, match):
    with LoadedSavedModel(export_dir) as served:
        with pytest.raises(tf.errors.InvalidArgumentError, match=match):
            served.run(inputs, signature)


def _warmup_inputs(export: Export, signature: str) -> dict:
    request = next(r for r in export.requests if r.model_spec.signature_name == signature)
    return inputs_from_predict_request(request)


@pytest.mark.slow
def test_multitask_signatures_reject_bad_shapes_values_and_task_ids(exports):
    export = _get(exports, "mmoe_synthetic")
    features = _warmup_inputs(export, SERVING_DEFAULT)["features"]
    with LoadedSavedModel(export.export_dir) as served:
        for bad, match in [
            (features[:, :7], r"Input `features` of signature `serving_default` must have shape "
                              r"\(n, 8\).*Received shape:\] \[4 7\]"),
            (features[..., None], r"must have shape \(n, 8\).*Received shape:\] \[4 8 1\]"),
            (np.where(np.eye(4, 8) > 0, np.nan, features).astype(np.float32),
             r"`features` of signature `serving_default` must hold finite values.*\[4\]"),
        ]:
            with pytest.raises(tf.errors.InvalidArgumentError, match=match):
                served.run({"features": bad})
        task_score = {"features": features, "task_id": np.array([0, 1, 2, -1], np.int32)}
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"`task_id` of signature `task_score` must hold task ids "
                                 r"\(0=y1, 1=y2\) in \[0, 2\)\. Map task names to ids in this "
                                 r"order\. Received:\] \[0 1 2 -1\]"):
            served.run(task_score, "task_score")
        task_score["task_id"] = np.array([1, 0, 1], np.int32)
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"Inputs `features`, `task_id` of signature `task_score` "
                                 r"must have the same number of rows.*\[4 3\]"):
            served.run(task_score, "task_score")


@pytest.mark.slow
def test_ranking_signatures_reject_misaligned_candidates_and_task_ids(exports):
    export = _get(exports, "youtube_ranking")
    inputs = _warmup_inputs(export, SERVING_DEFAULT)
    _rejects(export.export_dir, {**inputs, "video_age": inputs["video_age"][:3]},
             SERVING_DEFAULT, r"Inputs `user_features`, `video_features`, `video_age` of "
             r"signature `serving_default` must have the same number of rows.*\[4 4 3\]")
    scored = _warmup_inputs(export, "task_score")
    _rejects(export.export_dir, {**scored, "task_id": np.array([0, 4, 1, 2], np.int32)},
             "task_score", r"task ids \(0=click, 1=watch_time, 2=like, 3=rating\).*\[0, 4\)")


@pytest.mark.slow
def test_contrastive_signatures_reject_8_bit_pixels_and_other_image_sizes(exports):
    export = _get(exports, "simclr_digits")
    images = _warmup_inputs(export, SERVING_DEFAULT)["images"]
    for signature in (SERVING_DEFAULT, "ood_score"):
        _rejects(export.export_dir, {"images": images * 255.0}, signature,
                 rf"`images` of signature `{signature}` must hold intensities in \[0, 1\]; "
                 "divide 8-bit pixels by 255")
    _rejects(export.export_dir, {"images": np.zeros((2, 16, 16, 1), np.float32)},
             SERVING_DEFAULT, r"must have shape \(n, 8, 8, 1\).*\[2 16 16 1\]")


@pytest.mark.slow
def test_few_shot_rejects_labels_outside_the_ways_and_unpaired_support(exports):
    export = _get(exports, "maml_omniglot")
    episode = _warmup_inputs(export, "few_shot")
    labels = episode["support_y"].copy()
    labels[0] = 5
    _rejects(export.export_dir, {**episode, "support_y": labels}, "few_shot",
             r"`support_y` of signature `few_shot` must hold class labels \(the head of this "
             r"model has N=5 outputs\) in \[0, 5\)\. Relabel the support classes 0..4\. "
             r"Received:\] \[5 1 2 3 4\]")
    _rejects(export.export_dir, {**episode, "support_y": episode["support_y"][:-1]}, "few_shot",
             r"Inputs `support_x`, `support_y` of signature `few_shot` must have the same "
             r"number of rows.*\[5 4\]")

    export = _get(exports, "protonet_omniglot")
    episode = _warmup_inputs(export, "few_shot")
    _rejects(export.export_dir, {**episode, "support_y": np.array([0, 1, 3, 3, 4], np.int32)},
             "few_shot", r"must hold class labels 0..N-1 with every class present.*Relabel")

    export = _get(exports, "maml_sinusoid")
    episode = _warmup_inputs(export, "few_shot")
    _rejects(export.export_dir, {**episode, "support_y": episode["support_y"][:, 0]}, "few_shot",
             r"`support_y` of signature `few_shot` must have shape \(n, 1\).*\[10\]")


@pytest.mark.parametrize("name", ["mmoe_synthetic", "youtube_ranking", "simclr_digits",
                                  "maml_sinusoid"])
def test_serving_examples_need_a_positive_number_of_rows(name):
    task = build_task(_tiny_params(name))
    with pytest.raises(ValueError, match=r"invalid value for `num`.*Received: num=0"):
        task.serving_examples(0)


def test_model_name_defaults_to_the_run_directory_and_must_be_servable(tmp_path):
    trainer = build_trainer(_tiny_params("mmoe_synthetic"), str(tmp_path / "run"))
    export_model(trainer, str(tmp_path / "run"))
    config = parse_models_config(open(tmp_path / "run" / "export" / MODELS_CONFIG_FILE).read())
    assert [c.name for c in config.model_config_list.config] == ["run"]
    with pytest.raises(ValueError, match=r"invalid model name.*Received: name='my run'"):
        export_model(trainer, str(tmp_path / "my run"))
    assert not os.path.exists(tmp_path / "my run")
