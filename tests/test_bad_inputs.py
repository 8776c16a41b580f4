"""The bad-input suite: every bad input a user can hand the toolkit fails with a clear error.

Each case feeds one bad value through a public entry point (`trainers.train.build_params`,
the `trainers.train` command, the data loaders, the layers and the multi-task model) and
checks that the error names the bad value and says how to fix it. Data sets are tiny fakes
written to `tmp_path` (Omniglot zips and folders, census CSVs), so nothing is downloaded.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.configs import experiments  # noqa: F401  (registers every experiment)
from tf_mtml.configs.base import ConfigError
from tf_mtml.data import (
    ClassIndexedData,
    census,
    episode_dataset,
    labelled_class_datasets,
    load_census_income,
    load_omniglot,
    multi_label_dataset,
    resolve_data_dir,
    streaming_episode_dataset,
    two_level_task_dataset,
)
from tf_mtml.data import data_dir as data_dir_module
from tf_mtml.layers import (
    ConcatConditioning,
    FiLM,
    MMoE,
    MultiHead,
    MultiplicativeGating,
    TaskDescriptor,
    TaskTowers,
)
from tf_mtml.models.multitask_model import MultiTaskModel
from tf_mtml.models.task_spec import TaskSpec
from tf_mtml.tasks.factory import build_task
from trainers.train import build_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------------ flags and configs
def _params(model_dir, experiment="mmoe_synthetic", config_files=(), override="",
            train_steps=None, strategy=None, tpu=None, data_dir=None):
    return build_params(experiment, str(model_dir), "train", list(config_files), override,
                        train_steps, strategy, tpu, data_dir)


FLAG_CASES = [
    pytest.param({"experiment": "nope"},
                 r"Unknown experiment 'nope'\. Registered experiments: .*mmoe_synthetic",
                 id="unknown-experiment"),
    pytest.param({"strategy": "mirrored", "tpu": "grpc://10.0.0.2:8470"},
                 r"--tpu='grpc://10\.0\.0\.2:8470' was given with `runtime\.strategy=mirrored`"
                 r".*Pass --strategy=tpu, or drop --tpu", id="tpu-with-mirrored"),
    pytest.param({"strategy": "tpu"}, r"`runtime\.strategy=tpu` needs the TPU's address: pass "
                 r"--tpu=", id="tpu-strategy-without-address"),
    pytest.param({"strategy": "gpu"}, r"Unknown `runtime\.strategy=gpu`; expected one of "
                 r"\('default'", id="unknown-strategy"),
    pytest.param({"train_steps": -1}, r"`trainer\.train_steps` must be >= 0\. Received: -1",
                 id="negative-train-steps"),
    pytest.param({"data_dir": "/data/root"}, r"`task\.data\.data_dir='/data/root'` \(--data_dir\)"
                 r".*`task\.data\.source=mmoe_synthetic` generates its data.*Drop --data_dir",
                 id="data-dir-for-generated-multitask"),
    pytest.param({"experiment": "maml_sinusoid", "data_dir": "/data/root"},
                 r"data_dir='/data/root'.*`task\.data\.source=sinusoid` generates its data.*"
                 r"Drop --data_dir", id="data-dir-for-generated-sinusoid"),
    pytest.param({"experiment": "simclr_digits", "data_dir": "/data/root"},
                 r"data_dir='/data/root'.*`task\.data\.source=digits` generates its data.*"
                 r"Drop --data_dir", id="data-dir-for-generated-digits"),
    pytest.param({"experiment": "youtube_ranking", "data_dir": "/data/root"},
                 r"--data_dir='/data/root' was given, but experiment 'youtube_ranking' reads no "
                 r"data from disk.*Drop --data_dir", id="data-dir-for-generated-ranking"),
    pytest.param({"override": "trainer.train_steps"},
                 r"Malformed override 'trainer\.train_steps': expected `dotted\.key=value` pairs",
                 id="override-without-equals"),
    pytest.param({"override": "task.model.expert_units=[8,4"},
                 r"Cannot parse the value of override 'task\.model\.expert_units=\[8,4'",
                 id="override-unparsable-value"),
    pytest.param({"override": "trainer.train_steps=5,trainer.train_steps.every=3"},
                 r"Override 'trainer\.train_steps\.every=3' conflicts with an earlier one",
                 id="override-conflict"),
    pytest.param({"override": "trainer.train_steps=abc"},
                 r"`trainer\.train_steps` expects a value of type int\. Received: 'abc'",
                 id="override-wrong-type"),
    pytest.param({"override": "task.model.num_expert=4"},
                 r"Unknown config key `task\.model\.num_expert`\. Valid keys here: .*'num_experts'"
                 r".*Check the spelling", id="override-unknown-key"),
    pytest.param({"override": "trainer.optimizer.name=adamax"},
                 r"Unknown optimizer `trainer\.optimizer\.name=adamax`; expected one of "
                 r"\('adam'", id="unknown-optimizer"),
    pytest.param({"override": "trainer.optimizer.learning_rate=0"},
                 r"`trainer\.optimizer\.learning_rate`, expected a finite number > 0\. "
                 r"Received: learning_rate=0\.0", id="zero-learning-rate"),
    pytest.param({"override": "trainer.optimizer.learning_rate=.inf"},
                 r"`trainer\.optimizer\.learning_rate`, expected a finite number > 0\. "
                 r"Received: learning_rate=inf", id="infinite-learning-rate"),
    pytest.param({"override": "trainer.optimizer.clipnorm=-1"},
                 r"`trainer\.optimizer\.clipnorm`, expected a finite number > 0 .*or null for "
                 r"no clipping\. Received: clipnorm=-1\.0", id="negative-clipnorm"),
    pytest.param({"override": "trainer.checkpoint_interval=7"},
                 r"`trainer\.checkpoint_interval=7` must be a multiple of "
                 r"`trainer\.steps_per_loop=250`", id="checkpoint-not-a-loop-multiple"),
    pytest.param({"override": "trainer.validation_steps=0"},
                 r"`trainer\.validation_steps`, expected -1 \(the whole evaluation set\) or a "
                 r"positive number of batches\. Received: validation_steps=0",
                 id="zero-validation-steps"),
    pytest.param({"override": "runtime.seed=-1"},
                 r"`runtime\.seed`, expected an integer >= 0\. Received: seed=-1",
                 id="negative-seed"),
    pytest.param({"override": "task.data.sin_param_std=.nan"},
                 r"`task\.data\.sin_param_std`, expected a finite number >= 0\. "
                 r"Received: sin_param_std=nan", id="nan-data-parameter"),
    pytest.param({"override": "task.tasks=[{name: y1, type: regresion}, "
                              "{name: y2, type: regression}]"},
                 r"Invalid `task\.tasks`: .*`type` of task 'y1', expected one of \('binary', "
                 r"'multiclass', 'regression'\)\. Received: type='regresion'",
                 id="unknown-task-type"),
    pytest.param({"override": "task.tasks=[{name: y1, typ: regression}, "
                              "{name: y2, type: regression}]"},
                 r"config for task 0: unknown field\(s\) \['typ'\]\. A task is a mapping of "
                 r"TaskSpec fields \['name', 'type'", id="unknown-task-field"),
    pytest.param({"override": "task.tasks=[{name: y1, type: binary}, "
                              "{name: y2, type: regression}]"},
                 r"generates two real-valued targets.*Received: \['y1 \(binary\)', "
                 r"'y2 \(regression\)'\]\. Use e\.g\. --params_override=",
                 id="classifier-on-regression-data"),
    pytest.param({"experiment": "mmoe_census",
                  "override": "task.tasks=[{name: income, type: binary}, "
                              "{name: age, type: binary}]"},
                 r"`task\.tasks` \['age \(binary\)'\] are not labels of census group 1.*Name "
                 r"tasks from these", id="unknown-census-task-name"),
    pytest.param({"experiment": "youtube_ranking",
                  "override": "task.model.score_weights={share: 1}"},
                 r"`task\.model\.score_weights` names \['share'\], which are not tasks of this "
                 r"model.*Use task names from `task\.tasks`", id="unknown-ranking-task-name"),
    pytest.param({"experiment": "protonet_omniglot", "override": "task.data.num_ways=0"},
                 r"`task\.data\.num_ways` must be >= 1\. Received: num_ways=0",
                 id="episode-zero-ways"),
    pytest.param({"experiment": "protonet_omniglot", "override": "task.data.eval_split=train"},
                 r"`task\.data\.train_split=train` and `eval_split=train` share classes.*Use "
                 r"train_split=train", id="episode-eval-split-is-train-split"),
    pytest.param({"experiment": "maml_omniglot", "override": "task.data.eval_num_ways=20"},
                 r"cannot be evaluated 20-way\. Set `task\.data\.eval_num_ways=0`",
                 id="episode-maml-eval-ways"),
    pytest.param({"experiment": "maml_sinusoid", "override": "task.model.algorithm=protonet"},
                 r"`task\.model\.algorithm=protonet` classifies; sinusoid is regression\. Use "
                 r"one of", id="episode-classifier-on-sinusoid"),
    pytest.param({"experiment": "maml_omniglot", "override": "task.model.inner_lr=.inf"},
                 r"`task\.model\.inner_lr`, expected a finite number > 0\. Received: "
                 r"inner_lr=inf", id="episode-infinite-inner-lr"),
]


@pytest.mark.parametrize("flags, match", FLAG_CASES)
def test_bad_flags_and_overrides(flags, match, tmp_path):
    with pytest.raises(ConfigError, match=f"(?s){match}"):
        _params(tmp_path, **flags)


YAML_CASES = [
    pytest.param("trainer: {train_steps: 3\n  every: [\n",
                 r"bad\.yaml' is not valid YAML: .*line 2", id="yaml-malformed"),
    pytest.param("- trainer\n- runtime\n", r"bad\.yaml' must hold a mapping at the top level "
                 r"\(e\.g\. `trainer: \{train_steps: 100\}`\)\. Received: list", id="yaml-list"),
    pytest.param("trainer:\n  train_steps: 3\n  train_steps: 4\n",
                 r"bad\.yaml' is not valid YAML: .*found the key 'train_steps' twice \(first on "
                 r"line 2\); keep one", id="yaml-duplicate-key"),
    pytest.param("trainer:\n  train_step: 3\n",
                 r"Unknown config key `trainer\.train_step`\. Valid keys here: .*'train_steps'",
                 id="yaml-unknown-key"),
    pytest.param("runtime:\n  strategy: [mirrored]\n",
                 r"`runtime\.strategy` expects a value of type str\. Received: \['mirrored'\]",
                 id="yaml-wrong-type"),
]


@pytest.mark.parametrize("text, match", YAML_CASES)
def test_bad_config_files(text, match, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"(?s){match}"):
        _params(tmp_path, config_files=[str(path)])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"Cannot read config file '.*missing\.yaml': No such "
                                          r"file or directory"):
        _params(tmp_path, config_files=[str(tmp_path / "missing.yaml")])


def _train_command(model_dir, *flags, env=None):
    return subprocess.run(
        [sys.executable, "-m", "trainers.train", f"--model_dir={model_dir}", *flags], cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}, capture_output=True,
        text=True, timeout=120)


def test_command_rejects_data_dir_for_generated_data(tmp_path):
    result = _train_command(tmp_path / "run", "--experiment=mmoe_synthetic",
                            f"--data_dir={tmp_path}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"error: `task.data.data_dir='{tmp_path}'` (--data_dir) was given" in result.stderr
    assert "Drop --data_dir" in result.stderr


def test_command_names_a_missing_data_dir_from_the_environment(tmp_path):
    missing = tmp_path / "no-such-data"
    result = _train_command(tmp_path / "run", "--experiment=protonet_omniglot",
                            env={data_dir_module.DATA_DIR_ENV: str(missing)})
    assert result.returncode == 2, result.stderr[-2000:]
    assert (f"error: The data directory '{missing}' (from $TF_MTML_DATA_DIR) does not exist. "
            "Fix the path") in result.stderr


# ------------------------------------------------------------------------------- data root
def test_missing_data_dir_flag(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'.*nowhere' \(from --data_dir\) does not "
                                                r"exist\. Fix the path"):
        resolve_data_dir(str(tmp_path / "nowhere"))


def test_missing_data_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv(data_dir_module.DATA_DIR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"'.*nowhere' \(from \$TF_MTML_DATA_DIR\) does "
                                                r"not exist\. Fix the path"):
        resolve_data_dir()


def test_missing_default_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(data_dir_module.DATA_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data_dir_module, "REPOSITORY_ROOT", tmp_path / "checkout" / "repo")
    with pytest.raises(FileNotFoundError, match=r"No data directory found: .*none of .*shared/"
                                                r"data.*Pass --data_dir=/path/to/data, set "
                                                r"TF_MTML_DATA_DIR=/path/to/data"):
        resolve_data_dir()


# -------------------------------------------------------------------------------- Omniglot
CHARACTERS = ["character01", "character02", "character03", "character04"]
SPLITS = {"train": CHARACTERS[:2], "val": CHARACTERS[2:3], "test": CHARACTERS[2:]}
DRAWINGS = 3


def _png(seed: int) -> bytes:
    image = np.random.default_rng(seed).choice(np.array([0, 255], np.uint8), size=[8, 8, 1])
    return tf.io.encode_png(image).numpy()


def _fake_omniglot(root, as_zip=True, replace=None, splits=None):
    """`root/omniglot` in the upstream layout: background characters `Alpha/character0k`.

    `replace` maps a member (`Alpha/character01/0001_01.png`) to the bytes written instead.
    """
    omniglot = root / "omniglot"
    (omniglot / "splits").mkdir(parents=True)
    files = {f"Alpha/{character}/{number:04d}_{drawer:02d}.png": _png(number * 10 + drawer)
             for number, character in enumerate(CHARACTERS, 1)
             for drawer in range(1, DRAWINGS + 1)}
    files.update(replace or {})
    if as_zip:
        with zipfile.ZipFile(omniglot / "images_background.zip", "w") as archive:
            for member, blob in files.items():
                archive.writestr(f"images_background/{member}", blob)
    else:
        for member, blob in files.items():
            path = omniglot / "images_background" / member
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob)
    for split, characters in (splits or SPLITS).items():
        listing = {"background": {"Alpha": characters}} if characters else {}
        (omniglot / "splits" / f"{split}.json").write_text(json.dumps(listing))
    return str(root)


@pytest.fixture(autouse=True)
def _omniglot_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_MTML_CACHE_DIR", str(tmp_path / "cache"))


def _damage(path, keep_bytes: int):
    path.write_bytes(path.read_bytes()[:keep_bytes])


def test_corrupt_image_in_zip(tmp_path):
    root = _fake_omniglot(tmp_path, replace={"Alpha/character01/0001_02.png": b"not a png"})
    with pytest.raises(ValueError, match=r"Could not decode the Omniglot image .*images_background"
                                         r"\.zip/images_background/Alpha/character01/0001_02\.png"
                                         r".*re-extract or re-download it"):
        load_omniglot(root, "train", image_size=4)


def test_truncated_image_in_folder(tmp_path):
    root = _fake_omniglot(tmp_path, as_zip=False,
                          replace={"Alpha/character02/0002_03.png": _png(0)[:30]})
    with pytest.raises(ValueError, match=r"Could not decode the Omniglot image .*images_background"
                                         r"/Alpha/character02/0002_03\.png.*re-extract or "
                                         r"re-download it"):
        load_omniglot(root, "train", image_size=4)


def test_damaged_zip(tmp_path):
    root = _fake_omniglot(tmp_path)
    archive = tmp_path / "omniglot" / "images_background.zip"
    _damage(archive, archive.stat().st_size // 2)
    with pytest.raises(ValueError, match=r"images_background\.zip is not a readable zip file .*"
                                         r"Delete it and run `tf_mtml\.data\.download_omniglot"):
        load_omniglot(root, "train", image_size=4)


def test_missing_images_zip(tmp_path):
    root = _fake_omniglot(tmp_path)
    (tmp_path / "omniglot" / "images_background.zip").unlink()
    with pytest.raises(FileNotFoundError, match=r"neither .*images_background\.zip nor the folder "
                                                r".*images_background exists\. Run "
                                                r"`tf_mtml\.data\.download_omniglot"):
        load_omniglot(root, "train", image_size=4)


def test_images_folder_without_images(tmp_path):
    root = _fake_omniglot(tmp_path, as_zip=False)
    for path in (tmp_path / "omniglot" / "images_background").rglob("*.png"):
        path.unlink()
    with pytest.raises(ValueError, match=r"images_background holds no PNG images; expected "
                                         r"`<alphabet>/<character>/<drawing>\.png`.*Re-extract"):
        load_omniglot(root, "train", image_size=4)


def test_character_without_images(tmp_path):
    root = _fake_omniglot(tmp_path, splits={**SPLITS, "train": ["character01", "character09"]})
    with pytest.raises(ValueError, match=r"1 characters of the 'train' split are not in the "
                                         r"images, e.g\. \['background/Alpha/character09'\]\. "
                                         r"Re-extract or re-download"):
        load_omniglot(root, "train", image_size=4)


def test_split_with_zero_classes(tmp_path):
    root = _fake_omniglot(tmp_path, splits={**SPLITS, "test": []})
    with pytest.raises(ValueError, match=r"splits/test\.json lists no characters, so the 'test' "
                                         r"split would have zero classes.*re-download it"):
        load_omniglot(root, "test", image_size=4)


def test_missing_split_file(tmp_path):
    root = _fake_omniglot(tmp_path)
    (tmp_path / "omniglot" / "splits" / "val.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"split file .*splits/val\.json does not exist\. "
                                                r"Run `tf_mtml\.data\.download_omniglot"):
        load_omniglot(root, "val", image_size=4)


def test_missing_omniglot_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Omniglot not found: .*omniglot does not exist"
                                                r".*Point --data_dir or TF_MTML_DATA_DIR"):
        load_omniglot(str(tmp_path), "train", image_size=4)


def _omniglot_task(root, override):
    _fake_omniglot(root)
    params = _params(root / "run", "protonet_omniglot", data_dir=str(root),
                     override=f"task.data.rotations=false,task.data.image_size=4,{override}")
    return build_task(params)


def test_more_ways_than_classes(tmp_path):
    task = _omniglot_task(tmp_path, "task.data.eval_num_ways=5")
    with pytest.raises(ValueError, match=r"Received num_ways=5, but only 2 classes are available"
                                         r".*Use num_ways <= 2, or sample from more classes"):
        task.build_inputs(training=False)


def test_more_shots_and_queries_than_examples(tmp_path):
    task = _omniglot_task(tmp_path, "task.data.eval_num_ways=2,task.data.eval_num_queries=5")
    with pytest.raises(ValueError, match=r"Class 'background/Alpha/character03' has 3 examples, "
                                         r"fewer than num_shots \+ num_queries = 1 \+ 5.*Lower "
                                         r"num_shots or num_queries"):
        task.build_inputs(training=False)


# ---------------------------------------------------------------------------------- census
def _census_row(i: int, **values: str) -> list[str]:
    row = {name: f"v{i % 3}" for name in census.COLUMNS}
    row.update({name: str(i) for name in census.NUMERIC_COLUMNS})
    row["income"] = census.INCOME_VALUES[i % 2]
    row.update({name.replace("_", " "): value for name, value in values.items()})
    return [row[name] for name in census.COLUMNS]


def _census_file(root, rows=None, text=None, gzipped=True):
    folder = root / "census-income"
    folder.mkdir(parents=True)
    if text is None:
        rows = rows if rows is not None else [_census_row(i) for i in range(6)]
        text = "".join(", ".join(row) + "\n" for row in rows)
    blob = gzip.compress(text.encode()) if gzipped else text.encode()
    (folder / census.FILE_NAME).write_bytes(blob)
    return str(root)


CENSUS_CASES = [
    pytest.param({"text": ""}, r"holds no rows\. The download was cut short; download it again",
                 id="census-empty-csv"),
    pytest.param({"text": "age, sex\n", "gzipped": False},
                 r"census-income\.test\.gz is not a readable gzipped CSV .*Delete it and "
                 r"download it again", id="census-not-gzipped"),
    pytest.param({"text": "39, Private, 42\n"}, r"line 1: expected 42 comma-separated columns, "
                 r"found 3\. .*download it again", id="census-wrong-columns"),
    pytest.param({"rows": [_census_row(i) for i in range(3)] + [_census_row(3, age="nan")]},
                 r"line 4: column 'age' holds 'nan', expected a finite number \(1 such rows\)"
                 r".*download it again", id="census-nan-feature"),
    pytest.param({"rows": [_census_row(0, capital_gains="inf"), _census_row(1)]},
                 r"line 1: column 'capital gains' holds 'inf', expected a finite number",
                 id="census-infinite-feature"),
    pytest.param({"rows": [_census_row(0), _census_row(1, age="?")]},
                 r"line 2: column 'age' holds '\?', expected a finite number",
                 id="census-non-numeric-feature"),
    pytest.param({"rows": [_census_row(0), _census_row(1, income="?")]},
                 r"line 2: column 'income' holds '\?', expected one of \['- 50000\.', "
                 r"'50000\+\.'\]", id="census-unknown-label"),
]


@pytest.mark.parametrize("content, match", CENSUS_CASES)
def test_bad_census_files(content, match, tmp_path):
    root = _census_file(tmp_path, **content)
    with pytest.raises(ValueError, match=f"(?s){match}"):
        load_census_income(root)


def test_missing_census_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"census-income\.test\.gz does not exist\. "
                                                r"Download it with `tf_mtml\.data\."
                                                r"download_census_income\("):
        load_census_income(str(tmp_path))


# ------------------------------------------------------------- episodes and task mixtures
def _classes(num_classes=3, per_class=4):
    return ClassIndexedData(np.zeros((num_classes * per_class, 2), np.float32),
                            np.repeat(np.arange(num_classes), per_class))


def _task_data(num_examples):
    return tf.data.Dataset.from_tensor_slices(
        ({"x": tf.ones([num_examples, 3])}, tf.ones([num_examples])))


DATA_CASES = [
    pytest.param(lambda: ClassIndexedData(np.zeros((0, 2)), np.zeros(0, np.int64)), ValueError,
                 r"Received empty data: .*at least one example\. Received: examples\.shape=\(0, "
                 r"2\)", id="zero-examples"),
    pytest.param(lambda: _classes().subset([]), ValueError,
                 r"`class_ids`, expected a non-empty sequence of distinct class ids in 0\.\.2\. "
                 r"Received: class_ids=\[\]", id="zero-classes"),
    pytest.param(lambda: ClassIndexedData(np.zeros((2, 2)), np.array([0.0, np.nan])), ValueError,
                 r"`labels`, expected non-negative integer class ids.*dtype=float64",
                 id="non-integer-class-labels"),
    pytest.param(lambda: episode_dataset(_classes(), num_ways=4, num_shots=1, num_queries=1),
                 ValueError, r"Received num_ways=4, but only 3 classes are available.*Use "
                 r"num_ways <= 3", id="ways-larger-than-classes"),
    pytest.param(lambda: episode_dataset(_classes(), num_ways=2, num_shots=3, num_queries=2),
                 ValueError, r"Class 0 has 4 examples, fewer than num_shots \+ num_queries = 3 "
                 r"\+ 2.*Lower num_shots or num_queries", id="shots-plus-queries-too-many"),
    pytest.param(lambda: episode_dataset(_classes(), 2, 1, 1, meta_batch_size=3, num_episodes=4),
                 ValueError, r"Received num_episodes=4, which is not a multiple of "
                 r"meta_batch_size=3.*Pass a multiple", id="episodes-not-a-batch-multiple"),
    pytest.param(lambda: streaming_episode_dataset(
        labelled_class_datasets(tf.data.Dataset.from_tensor_slices(
            (tf.range(8.0), tf.constant([0, 1] * 4))), [0, 1, 7]),
        [4, 4, 4], num_ways=2, num_shots=1, num_queries=1), ValueError,
        r"The dataset of class 2 yields only 0 examples, fewer than num_shots \+ num_queries = "
        r"2.*would hang\. Check its label value", id="streaming-class-without-examples"),
    pytest.param(lambda: two_level_task_dataset({"a": _task_data(8), "empty": _task_data(0)},
                                                tasks_per_batch=1, examples_per_task=2),
                 ValueError, r"The dataset of task 'empty' is empty\. Drop the task or fill it",
                 id="empty-task-dataset"),
    pytest.param(lambda: two_level_task_dataset({"a": _task_data(8)}, tasks_per_batch=1,
                                                examples_per_task=2, sampling_weights={"b": 1.0}),
                 ValueError, r"The keys of the sampling weights \['b'\] do not match the tasks "
                 r"\['a'\]\. Pass exactly one value per task name", id="unknown-task-in-weights"),
    pytest.param(lambda: multi_label_dataset(np.zeros((0, 2)), {"y": np.zeros(0)}, batch_size=2),
                 ValueError, r"Received no examples: feature 'x' is empty\. Pass at least one",
                 id="multi-label-zero-examples"),
    pytest.param(lambda: multi_label_dataset(np.zeros((4, 2)), {"y": [1.0, -np.inf, 0.0, 2.0]},
                                             batch_size=2), ValueError,
                 r"The labels of task 'y' hold infinite values, first in example 1: "
                 r"-inf\. NaN marks a missing label; fix the infinite ones",
                 id="infinite-regression-targets"),
    pytest.param(lambda: multi_label_dataset(np.array([[0.0, 1.0], [np.nan, 0.0]]),
                                             {"y": [1.0, 2.0]}, batch_size=2), ValueError,
                 r"Feature 'x' holds non-finite values \(NaN or Inf\), first in example 1\. "
                 r".*impute them", id="nan-features"),
]


@pytest.mark.parametrize("make, error, match", DATA_CASES)
def test_bad_data(make, error, match):
    with pytest.raises(error, match=f"(?s){match}"):
        make()


# ---------------------------------------------------------------------------------- layers
X = np.ones((2, 4), np.float32)
Z = np.eye(3, dtype=np.float32)[[0, 1]]


def _call_twice(layer, first, second):
    layer(first)
    return layer(second)


LAYER_CASES = [
    pytest.param(lambda: MMoE(0, 3, 2), r"`num_experts`, expected a positive integer\. "
                 r"Received: num_experts=0", id="mmoe-zero-experts"),
    pytest.param(lambda: MMoE(2, 3, 2)(np.ones((2, 3, 4), np.float32)),
                 r"MMoE expects inputs of shape `\(batch, d\)` with a known `d`\. Received: "
                 r"input_shape=\(2, 3, 4\)", id="mmoe-rank-3-input"),
    pytest.param(lambda: _call_twice(MMoE(2, 3, 2), X, np.ones((2, 5), np.float32)),
                 r"expected axis -1 of input shape to have value 4, but received input with "
                 r"shape \(2, 5\)", id="mmoe-feature-width-changed"),
    pytest.param(lambda: MMoE(2, 3, 2)(tf.constant([["a"] * 4] * 2)),
                 r"MMoE expects numeric `x`\. Received: x\.dtype=string\. Encode the features",
                 id="mmoe-string-features"),
    pytest.param(lambda: TaskDescriptor("one_hot", num_tasks=3)(np.array([0.4, 1.7])),
                 r"TaskDescriptor expects integer `inputs`\. Received: inputs\.dtype=float32\. "
                 r"Pass integer task ids", id="task-descriptor-float-ids"),
    pytest.param(lambda: TaskDescriptor("one_hot", num_tasks=3)(np.array([[0, 1], [1, 2]])),
                 r"expects task ids of shape `\(batch,\)` or `\(batch, 1\)`\. Received: "
                 r"input_shape=\(2, 2\)", id="task-descriptor-ids-shape"),
    pytest.param(lambda: FiLM()(X), r"FiLM expects a list `\[h, z\]` of two tensors\. Received: "
                 r"input_shape=\(2, 4\)", id="film-single-tensor"),
    pytest.param(lambda: FiLM()([X, np.ones((3, 3), np.float32)]),
                 r"FiLM expects `h` and `z` with the same batch size .*Received: h\.shape=\(2, "
                 r"4\), z\.shape=\(3, 3\)", id="film-batch-mismatch"),
    pytest.param(lambda: ConcatConditioning()([X.astype(np.int32), Z]),
                 r"ConcatConditioning expects floating-point `h`\. Received: h\.dtype=int32\. "
                 r"Cast it", id="concat-integer-h"),
    pytest.param(lambda: MultiplicativeGating("hard", num_tasks=2)([X, Z]),
                 r"expects `z` with 2 columns \(a task one-hot\).*Received: h\.shape=\(2, 4\), "
                 r"z\.shape=\(2, 3\)", id="hard-gating-task-count"),
    pytest.param(lambda: MultiHead({"a": 1}, (4,))(tf.constant([["a"] * 4] * 2)),
                 r"MultiHead expects numeric `inputs`\. Received: inputs\.dtype=string\. Encode",
                 id="multi-head-string-features"),
    pytest.param(lambda: _call_twice(MultiHead({"a": 1}, (4,)), X, np.ones((2, 5), np.float32)),
                 r"expected axis -1 of input shape to have value 4, but received input with "
                 r"shape \(2, 5\)", id="multi-head-feature-width-changed"),
    pytest.param(lambda: TaskTowers({"a": 1, "b": 1})([X, X, X]),
                 r"TaskTowers expects one tensor `\(batch, d\)` or a list of 2 tensors \(one per "
                 r"task of \['a', 'b'\]\)", id="towers-tensor-count"),
]


@pytest.mark.parametrize("make, match", LAYER_CASES)
def test_bad_layer_inputs(make, match):
    with pytest.raises(ValueError, match=f"(?s){match}"):
        make()


# ----------------------------------------------------------------------- multi-task model
def _model():
    features = keras.Input((4,), name="features")
    network = keras.Model(features, TaskTowers({"y1": 1, "y2": 1, "c": 3})(features))
    tasks = [TaskSpec("y1", "regression", standardize=True), TaskSpec("y2", "binary"),
             TaskSpec("c", "multiclass", num_classes=3)]
    return MultiTaskModel(network, tasks)


LABELS = {"y1": np.array([0.5, np.nan], np.float32), "y2": np.array([1.0, 0.0], np.float32),
          "c": np.array([2, -1], np.int32)}

MODEL_CASES = [
    pytest.param({"y3": LABELS["y1"]}, ValueError, r"Received labels for unknown task\(s\) "
                 r"\['y3'\]\. The model's tasks are \['y1', 'y2', 'c'\]: rename the label keys",
                 id="labels-unknown-task"),
    pytest.param({"c": None}, ValueError, r"No labels for task\(s\) \['c'\]\. Pass a label for "
                 r"every task and mark the examples without one", id="labels-missing-task"),
    pytest.param({"y1": np.ones(3, np.float32)}, ValueError,
                 r"Labels of task 'y1' have 3 rows, but the model's output for it has 2.*same "
                 r"batch", id="labels-batch-mismatch"),
    pytest.param({"y1": np.ones((2, 3), np.float32)}, ValueError,
                 r"Labels of task 'y1' must have shape \(batch,\) or \(batch, 1\)\. Received: "
                 r"shape=\(2, 3\)", id="labels-wrong-shape"),
    pytest.param({"c": np.array([2.0, 1.0], np.float32)}, ValueError,
                 r"Labels of multiclass task 'c' must be integer class ids .*Received: "
                 r"dtype=float32\. Cast them to int32", id="labels-float-class-ids"),
    pytest.param({"y1": np.array([0.5, np.inf], np.float32)}, tf.errors.InvalidArgumentError,
                 r"invalid label for regression task 'y1', expected finite values \(NaN = "
                 r"missing\)\. Fix the label or mark it missing\. First invalid label at row.*1.*"
                 r"value:.*inf", id="labels-infinite-regression-target"),
    pytest.param({"y2": np.array([1.0, 2.0], np.float32)}, tf.errors.InvalidArgumentError,
                 r"invalid label for binary task 'y2', expected values in \[0, 1\] \(NaN = "
                 r"missing\)\. Fix the label.*value:.*2", id="labels-binary-out-of-range"),
    pytest.param({"c": np.array([3, 0], np.int32)}, tf.errors.InvalidArgumentError,
                 r"invalid label for multiclass task 'c', expected class ids below "
                 r"num_classes=3 .*value:.*3", id="labels-unknown-class-id"),
]


@pytest.mark.parametrize("labels, error, match", MODEL_CASES)
def test_bad_labels(labels, error, match):
    model = _model()
    y = {k: v for k, v in {**LABELS, **labels}.items() if v is not None}
    with pytest.raises(error, match=f"(?s){match}"):
        model.compute_loss(X, y, model(X))


def test_label_statistics_for_unknown_task():
    with pytest.raises(ValueError, match=r"Unknown task 'y9'\. The model's tasks are \['y1', "
                                         r"'y2', 'c'\]: use one of these names"):
        _model().set_label_statistics({"y9": (0.0, 1.0)})


def test_label_statistics_without_labels():
    with pytest.raises(ValueError, match=r"No labels for standardised task 'y1'\. Pass its "
                                         r"training labels .*received tasks \['y2'\]"):
        _model().adapt_label_statistics({"y2": LABELS["y2"]})


def test_infinite_task_weight():
    with pytest.raises(ValueError, match=r"Task 'ctr' needs a finite loss `weight` >= 0\. "
                                         r"Received: weight=inf"):
        TaskSpec("ctr", "binary", weight=float("inf"))
