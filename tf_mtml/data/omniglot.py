"""Omniglot (Lake et al. 2015) for few-shot learning, with the Vinyals et al. 2016 class split.

`data_dir/omniglot/` holds `images_background.zip` and `images_evaluation.zip` (or their
extracted folders) as published in https://github.com/brendenlake/omniglot, and
`splits/{train,val,test}.json`: 1028 / 172 / 423 characters, each file
`{"background": {alphabet: [character, ...]}, "evaluation": {...}}`.

Decoding the 32,460 PNGs takes seconds, so the decoded images of each zip (or folder) are
cached as `.npz`, keyed by the source files' sizes and modification times and the image size.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np
import tensorflow as tf

from tf_mtml.data._common import check_positive_int
from tf_mtml.data.labelled import ClassIndexedData

_IMAGES_URL = "https://github.com/brendenlake/omniglot/raw/master/python"
# The split lists as published with the MIT-licensed pytorch-meta project.
_SPLITS_URL = ("https://raw.githubusercontent.com/tristandeleu/pytorch-meta/master/torchmeta/"
               "datasets/assets/omniglot")
OMNIGLOT_URLS = {
    "images_background.zip": f"{_IMAGES_URL}/images_background.zip",
    "images_evaluation.zip": f"{_IMAGES_URL}/images_evaluation.zip",
    **{f"splits/{split}.json": f"{_SPLITS_URL}/{split}.json" for split in ("train", "val", "test")},
}
OMNIGLOT_MD5 = {
    "images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811",
}
SOURCES = ("background", "evaluation")
SPLITS = ("train", "val", "test", "train+val")
CACHE_DIR_ENV = "TF_MTML_CACHE_DIR"
_CACHE_VERSION = 1
_DECODE_BATCH = 1024


def download_omniglot(data_dir: str) -> str:
    """Downloads the Omniglot zips and the split files into `data_dir/omniglot/`.

    Files already present are kept. Each file is written under a temporary name and renamed
    once complete (and, for the zips, once its MD5 matches upstream), so an interrupted
    download never leaves a truncated file behind.

    Args:
        data_dir: the data root (see `resolve_data_dir`).

    Returns:
        The path of `data_dir/omniglot`.
    """
    root = Path(data_dir) / "omniglot"
    for relative, url in OMNIGLOT_URLS.items():
        target = root / relative
        if not target.exists():
            _download(url, target, OMNIGLOT_MD5.get(relative))
    return str(root)


def omniglot_characters(data_dir: str, split: str) -> list[str]:
    """Names `"<source>/<alphabet>/<character>"` of the characters of a split, in file order.

    Args:
        data_dir: the data root holding `omniglot/`.
        split: one of `"train"`, `"val"`, `"test"`, `"train+val"`.

    Returns:
        The character names, e.g. `"background/Alphabet_of_the_Magi/character01"`.
    """
    if split not in SPLITS:
        raise ValueError(
            f"Received an invalid value for `split`, expected one of {SPLITS}. "
            f"Received: split={split!r}"
        )
    root = _omniglot_root(data_dir)
    names = []
    for part in split.split("+"):
        path = root / "splits" / f"{part}.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"The Omniglot split file {path} does not exist. Run "
                "`tf_mtml.data.download_omniglot(data_dir)` to fetch the split files."
            )
        try:
            listing = json.loads(path.read_text())
            part_names = [f"{source}/{alphabet}/{character}" for source in SOURCES
                          for alphabet, characters in listing.get(source, {}).items()
                          for character in characters]
        except (ValueError, AttributeError, TypeError) as error:
            raise ValueError(
                f"Could not read the Omniglot split file {path}: {error}. Expected "
                '{"background": {alphabet: [character, ...]}, "evaluation": {...}}; '
                "delete it and re-download it with `download_omniglot`."
            ) from error
        if not part_names:
            raise ValueError(
                f"The Omniglot split file {path} lists no characters, so the {part!r} split "
                'would have zero classes. Expected {"background": {alphabet: [character, ...]}, '
                '"evaluation": {...}}; delete it and re-download it with `download_omniglot`.'
            )
        names += part_names
    return names


def load_omniglot(
    data_dir: str, split: str, image_size: int = 28, cache_dir: str | None = None
) -> ClassIndexedData:
    """Loads a split of Omniglot: one class per character, 20 drawings each.

    Images are inverted so that strokes are 1 on a 0 background, then resized with area
    interpolation: each output pixel is the mean of the input area it covers, which keeps
    the 2-3 pixel strokes of the 105x105 originals visible at 28x28, where bilinear
    interpolation without antialiasing samples between them and drops parts of strokes.

    Args:
        data_dir: the data root holding `omniglot/` (see `resolve_data_dir`).
        split: `"train"` (1028 characters), `"val"` (172), `"test"` (423) or `"train+val"`.
        image_size: side of the square output images.
        cache_dir: folder of the decoded-image cache; defaults to `$TF_MTML_CACHE_DIR`, else
            `~/.cache/tf_mtml`.

    Returns:
        A `ClassIndexedData` of float32 images `(M, image_size, image_size, 1)` in `[0, 1]`,
        class names `"<source>/<alphabet>/<character>"` in split-file order.

    Example:

    >>> data = load_omniglot(resolve_data_dir(), "test")  # doctest: +SKIP
    >>> data.examples.shape, data.num_classes  # doctest: +SKIP
    ((8460, 28, 28, 1), 423)
    """
    check_positive_int("image_size", image_size)
    names = omniglot_characters(data_dir, split)
    root = _omniglot_root(data_dir)
    cache = Path(cache_dir or os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "tf_mtml")
    found, missing = {}, []
    for source in SOURCES:
        wanted = [name for name in names if name.startswith(f"{source}/")]
        if not wanted:
            continue
        images, classes, counts = _decoded_source(root, source, image_size, cache)
        ends = dict(zip(classes, np.cumsum(counts), strict=True))
        sizes = dict(zip(classes, counts, strict=True))
        for name in wanted:
            character = name.split("/", 1)[1]
            if character in ends:
                found[name] = images[ends[character] - sizes[character]:ends[character]]
            else:
                missing.append(name)
    if missing:
        raise ValueError(
            f"{len(missing)} characters of the {split!r} split are not in the images, e.g. "
            f"{missing[:3]}. Re-extract or re-download the Omniglot zips (`download_omniglot`)."
        )
    examples = np.concatenate([found[name] for name in names])[..., None]
    labels = np.repeat(np.arange(len(names)), [len(found[name]) for name in names])
    return ClassIndexedData(examples.astype(np.float32) / 255.0, labels, names)


def _omniglot_root(data_dir: str) -> Path:
    root = Path(data_dir) / "omniglot"
    if not root.is_dir():
        raise FileNotFoundError(
            f"Omniglot not found: {root} does not exist. It should hold images_background.zip "
            "and images_evaluation.zip (or the extracted folders) and splits/*.json. Point "
            "--data_dir or TF_MTML_DATA_DIR at the folder holding omniglot/, or run "
            "`tf_mtml.data.download_omniglot(data_dir)`."
        )
    return root


def _source_location(root: Path, source: str) -> Path:
    for location in (root / f"images_{source}.zip", root / f"images_{source}"):
        if location.exists():
            return location
    raise FileNotFoundError(
        f"Omniglot images not found: neither {root / f'images_{source}.zip'} nor the folder "
        f"{root / f'images_{source}'} exists. Run `tf_mtml.data.download_omniglot(data_dir)`, "
        "or point --data_dir / TF_MTML_DATA_DIR at a complete copy."
    )


def _fingerprint(location: Path) -> list:
    if location.is_file():
        stat = location.stat()
        return [location.name, stat.st_size, stat.st_mtime_ns]
    return sorted(
        [str(path.relative_to(location)), path.stat().st_size, path.stat().st_mtime_ns]
        for path in location.rglob("*.png")
    )


def _decoded_source(
    root: Path, source: str, image_size: int, cache_dir: Path
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """uint8 images `(M, S, S)` of a source grouped by class, class names, class sizes."""
    location = _source_location(root, source)
    key = json.dumps([_CACHE_VERSION, source, image_size, _fingerprint(location)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    cache_path = cache_dir / f"omniglot_{source}_{image_size}px_{digest}.npz"
    try:
        with np.load(cache_path) as cached:
            return cached["images"], cached["classes"].tolist(), cached["counts"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        pass  # No cache entry yet, or a damaged one: decode and (re)write it.
    # Grouped by class `<alphabet>/<character>` (the folders above each file), in sorted order.
    files = sorted(_png_files(location), key=lambda file: (_class_of(file[0]), file[0]))
    images = _decode(files, image_size, location)
    names, counts = np.unique([_class_of(member) for member, _ in files], return_counts=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache_dir, suffix=".npz.part", delete=False) as out:
        np.savez(out, images=images, classes=names, counts=counts)
    os.replace(out.name, cache_path)
    return images, names.tolist(), counts


def _class_of(member: str) -> str:
    return "/".join(Path(member).parts[-3:-1])


def _png_files(location: Path) -> list[tuple[str, bytes]]:
    """`(member path, bytes)` of every PNG under a zip or folder."""
    if location.is_file():
        try:
            with zipfile.ZipFile(location) as archive:
                files = [(name, archive.read(name))
                         for name in archive.namelist() if name.endswith(".png")]
        except (zipfile.BadZipFile, zlib.error, EOFError) as error:
            raise ValueError(
                f"The Omniglot archive {location} is not a readable zip file ({error}): the "
                "download was cut short or the file is damaged. Delete it and run "
                "`tf_mtml.data.download_omniglot(data_dir)`, or replace it with a good copy."
            ) from error
    else:
        files = [(str(path.relative_to(location)), path.read_bytes())
                 for path in location.rglob("*.png")]
    if not files:
        raise ValueError(
            f"{location} holds no PNG images; expected "
            "`<alphabet>/<character>/<drawing>.png` files as in the upstream Omniglot release. "
            "Re-extract it, or delete it and run `tf_mtml.data.download_omniglot(data_dir)`."
        )
    return files


def _decode(files: list[tuple[str, bytes]], image_size: int, location: Path) -> np.ndarray:
    def decode(blob: tf.Tensor) -> tf.Tensor:
        strokes = 1.0 - tf.cast(tf.io.decode_png(blob, channels=1), tf.float32) / 255.0
        resized = tf.image.resize(strokes, [image_size, image_size], method="area")
        return tf.cast(tf.round(resized[..., 0] * 255.0), tf.uint8)

    blobs = [blob for _, blob in files]
    batches = []
    try:
        dataset = tf.data.Dataset.from_tensor_slices(blobs).map(
            decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        batches.extend(dataset.batch(_DECODE_BATCH).as_numpy_iterator())
    except tf.errors.InvalidArgumentError as error:
        # Batches arrive in order, so the bad file is in the first batch not yet delivered.
        for member, blob in files[len(batches) * _DECODE_BATCH:]:
            try:
                decode(tf.constant(blob))
            except tf.errors.InvalidArgumentError as file_error:
                raise ValueError(
                    f"Could not decode the Omniglot image {location / member}: "
                    f"{file_error.message}. The file is damaged: re-extract or re-download it "
                    "(`download_omniglot`)."
                ) from file_error
        raise error
    return np.concatenate(batches)


def _download(url: str, target: Path, md5: str | None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5()
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".part", delete=False) as out:
        part = Path(out.name)
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                for block in iter(lambda: response.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
        except BaseException:
            part.unlink()
            raise
    if md5 is not None and digest.hexdigest() != md5:
        part.unlink()
        raise OSError(
            f"The download of {url} has MD5 {digest.hexdigest()}, expected {md5}: it is "
            "truncated or changed upstream. Retry, or fetch the file by hand into "
            f"{target}."
        )
    os.replace(part, target)
