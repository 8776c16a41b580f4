"""Tests for tf_mtml.data.omniglot, on a tiny synthetic copy and on the real data when present."""

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.data import load_omniglot, omniglot_characters, resolve_data_dir
from tf_mtml.data import omniglot as omniglot_module

CHARACTERS = {
    "background": {"Alpha": ["character01", "character02"], "Beta": ["character01"]},
    "evaluation": {"Gamma": ["character01", "character02"]},
}
SPLIT_FILES = {
    "train": {"background": {"Alpha": ["character02", "character01"]},
              "evaluation": {"Gamma": ["character01"]}},
    "val": {"background": {"Beta": ["character01"]}, "evaluation": {}},
    "test": {"background": {}, "evaluation": {"Gamma": ["character02"]}},
}
DRAWERS, SIDE, SIZE = 3, 12, 4  # 12x12 images resized to 4x4: 3x3 blocks.


def _write_omniglot(data_dir, as_zip=True):
    """Writes random black-and-white PNGs; returns {character name: uint8 images (D, 12, 12)}."""
    root = data_dir / "omniglot"
    (root / "splits").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {}
    for source, alphabets in CHARACTERS.items():
        files = {}
        for alphabet, characters in alphabets.items():
            for number, character in enumerate(characters):
                drawn = rng.choice(np.array([0, 255], np.uint8), size=[DRAWERS, SIDE, SIDE, 1])
                images[f"{source}/{alphabet}/{character}"] = drawn[..., 0]
                for drawer, image in enumerate(drawn):
                    member = f"{alphabet}/{character}/{number:04d}_{drawer + 1:02d}.png"
                    files[member] = tf.io.encode_png(image).numpy()
        if as_zip:
            with zipfile.ZipFile(root / f"images_{source}.zip", "w") as archive:
                for member, png in files.items():
                    archive.writestr(f"images_{source}/{member}", png)
        else:
            for member, png in files.items():
                path = root / f"images_{source}" / member
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(png)
    for split, listing in SPLIT_FILES.items():
        (root / "splits" / f"{split}.json").write_text(json.dumps(listing))
    return images


def _expected(images):
    """Strokes 1: invert, then average each 3x3 block (area resize) and quantise to 1/255."""
    strokes = 1.0 - images.astype(np.float64) / 255.0
    blocks = strokes.reshape(len(images), SIZE, SIDE // SIZE, SIZE, SIDE // SIZE).mean((2, 4))
    return (np.round(blocks * 255.0) / 255.0)[..., None]


@pytest.mark.parametrize("as_zip", [True, False], ids=["zip", "folder"])
def test_split_images_are_inverted_area_resized_in_split_order(tmp_path, as_zip):
    images = _write_omniglot(tmp_path, as_zip)
    data = load_omniglot(str(tmp_path), "train", image_size=SIZE, cache_dir=str(tmp_path / "c"))
    names = ["background/Alpha/character02", "background/Alpha/character01",
             "evaluation/Gamma/character01"]
    assert data.class_names == tuple(names)
    assert data.examples.dtype == np.float32 and data.examples.shape == (9, SIZE, SIZE, 1)
    np.testing.assert_array_equal(data.labels, np.repeat([0, 1, 2], DRAWERS))
    expected = np.concatenate([_expected(images[name]) for name in names])
    np.testing.assert_allclose(data.examples, expected, atol=1e-6)


def test_train_plus_val_and_characters(tmp_path):
    _write_omniglot(tmp_path)
    cache = str(tmp_path / "cache")
    both = load_omniglot(str(tmp_path), "train+val", image_size=SIZE, cache_dir=cache)
    train = load_omniglot(str(tmp_path), "train", image_size=SIZE, cache_dir=cache)
    val = load_omniglot(str(tmp_path), "val", image_size=SIZE, cache_dir=cache)
    assert both.class_names == train.class_names + val.class_names
    np.testing.assert_array_equal(both.examples, np.concatenate([train.examples, val.examples]))
    assert omniglot_characters(str(tmp_path), "test") == ["evaluation/Gamma/character02"]


def test_decoded_images_are_cached_by_source_stamp_and_size(tmp_path, monkeypatch):
    _write_omniglot(tmp_path)
    cache = tmp_path / "cache"
    cold = load_omniglot(str(tmp_path), "test", image_size=SIZE, cache_dir=str(cache))
    assert [p.name.split("_")[:3] for p in cache.iterdir()] == [
        ["omniglot", "evaluation", f"{SIZE}px"]]

    def no_decoding(*args):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(omniglot_module, "_decode", no_decoding)
    warm = load_omniglot(str(tmp_path), "test", image_size=SIZE, cache_dir=str(cache))
    np.testing.assert_array_equal(warm.examples, cold.examples)
    with pytest.raises(AssertionError, match="decoded although cached"):
        load_omniglot(str(tmp_path), "test", image_size=6, cache_dir=str(cache))
    source = tmp_path / "omniglot" / "images_evaluation.zip"
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="decoded although cached"):
        load_omniglot(str(tmp_path), "test", image_size=SIZE, cache_dir=str(cache))


def test_default_cache_dir_comes_from_the_environment(tmp_path, monkeypatch):
    _write_omniglot(tmp_path)
    monkeypatch.setenv("TF_MTML_CACHE_DIR", str(tmp_path / "env_cache"))
    load_omniglot(str(tmp_path), "val", image_size=SIZE)
    assert len(list((tmp_path / "env_cache").glob("omniglot_background_*.npz"))) == 1


class TestErrors:
    def test_missing_data(self, tmp_path):
        with pytest.raises(FileNotFoundError, match=r"omniglot does not exist.*download_omniglot"):
            load_omniglot(str(tmp_path), "train")
        _write_omniglot(tmp_path)
        (tmp_path / "omniglot" / "images_evaluation.zip").unlink()
        with pytest.raises(FileNotFoundError, match=r"images_evaluation.zip nor the folder"):
            load_omniglot(str(tmp_path), "test", cache_dir=str(tmp_path / "c"))
        (tmp_path / "omniglot" / "splits" / "val.json").unlink()
        with pytest.raises(FileNotFoundError, match=r"val.json does not exist.*download_omniglot"):
            load_omniglot(str(tmp_path), "val")

    def test_bad_arguments(self, tmp_path):
        _write_omniglot(tmp_path)
        with pytest.raises(ValueError, match="split='training'"):
            load_omniglot(str(tmp_path), "training")
        with pytest.raises(ValueError, match="image_size=0"):
            load_omniglot(str(tmp_path), "train", image_size=0)

    def test_corrupt_image_is_named(self, tmp_path):
        _write_omniglot(tmp_path, as_zip=False)
        bad = tmp_path / "omniglot" / "images_background" / "Beta" / "character01" / "0000_02.png"
        bad.write_bytes(b"not a png")
        with pytest.raises(ValueError, match=f"Could not decode the Omniglot image {bad}"):
            load_omniglot(str(tmp_path), "val", image_size=SIZE, cache_dir=str(tmp_path / "c"))

    def test_split_file_problems(self, tmp_path):
        _write_omniglot(tmp_path)
        splits = tmp_path / "omniglot" / "splits"
        (splits / "test.json").write_text(json.dumps({"evaluation": {"Gamma": ["character09"]}}))
        with pytest.raises(ValueError, match=r"1 characters of the 'test' split.*character09"):
            load_omniglot(str(tmp_path), "test", image_size=SIZE, cache_dir=str(tmp_path / "c"))
        (splits / "val.json").write_text("[1, 2]")
        with pytest.raises(ValueError, match="Could not read the Omniglot split file"):
            load_omniglot(str(tmp_path), "val")


def test_download_is_verified_and_atomic(tmp_path, monkeypatch):
    """Exercises the download code with file:// URLs: no network."""
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    payloads = {"images_background.zip": b"zip bytes", "splits/train.json": b"{}"}
    urls = {}
    for relative, payload in payloads.items():
        (upstream / relative.replace("/", "_")).write_bytes(payload)
        urls[relative] = (upstream / relative.replace("/", "_")).as_uri()
    md5 = {"images_background.zip": hashlib.md5(b"zip bytes").hexdigest()}
    monkeypatch.setattr(omniglot_module, "OMNIGLOT_URLS", urls)
    monkeypatch.setattr(omniglot_module, "OMNIGLOT_MD5", md5)
    root = Path(omniglot_module.download_omniglot(str(tmp_path / "data")))
    assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} == set(
        payloads)
    for relative, payload in payloads.items():
        assert (root / relative).read_bytes() == payload
    (root / "splits" / "train.json").write_text("kept")
    omniglot_module.download_omniglot(str(tmp_path / "data"))
    assert (root / "splits" / "train.json").read_text() == "kept"

    monkeypatch.setattr(omniglot_module, "OMNIGLOT_MD5", {"images_background.zip": "0" * 32})
    with pytest.raises(OSError, match="has MD5 .* expected 0000"):
        omniglot_module.download_omniglot(str(tmp_path / "other"))
    assert not any((tmp_path / "other" / "omniglot").iterdir()), "a partial file was left"


def _real_data_dir():
    try:
        data_dir = resolve_data_dir()
    except FileNotFoundError as error:
        pytest.skip(f"No real data root: {error}")
    if not (Path(data_dir) / "omniglot").is_dir():
        pytest.skip(f"No Omniglot under the data root {data_dir}.")
    return data_dir


def test_real_vinyals_splits_are_disjoint_and_complete():
    data_dir = _real_data_dir()
    splits = {split: omniglot_characters(data_dir, split) for split in ("train", "val", "test")}
    assert {split: len(names) for split, names in splits.items()} == {
        "train": 1028, "val": 172, "test": 423}
    sets = [set(names) for names in splits.values()]
    assert sum(len(s) for s in sets) == len(set.union(*sets)), "a character is in two splits"
    characters = set()
    for source in ("background", "evaluation"):
        with zipfile.ZipFile(Path(data_dir) / "omniglot" / f"images_{source}.zip") as archive:
            characters |= {f"{source}/" + "/".join(Path(n).parts[1:3])
                           for n in archive.namelist() if n.endswith(".png")}
    assert set.union(*sets) == characters


def test_real_test_split(tmp_path):
    data = load_omniglot(_real_data_dir(), "test", cache_dir=str(tmp_path))
    assert data.examples.shape == (423 * 20, 28, 28, 1)
    assert data.num_classes == 423 and set(data.class_sizes.tolist()) == {20}
    assert data.examples.dtype == np.float32
    assert data.examples.min() == 0.0 and data.examples.max() == 1.0
    # Strokes are 1 on a 0 background: most pixels are background.
    assert np.mean(data.examples == 0.0) > 0.5
