"""Tests for tf_mtml.data.episodes."""

from statistics import NormalDist

import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.data import (
    ClassIndexedData,
    class_datasets_from_files,
    episode_dataset,
    streaming_episode_dataset,
)
from tf_mtml.meta.base import QUERY_X, QUERY_Y, SUPPORT_X, SUPPORT_Y


def _id_data(sizes, seed=0):
    """Class `c` has `sizes[c]` examples; an example's features are `[unique id, class]`."""
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(sizes)), sizes))
    examples = np.stack([np.arange(len(labels)), labels], axis=1).astype(np.float32)
    return ClassIndexedData(examples, labels)


def _id_class_datasets(sizes):
    """One dataset per class; example `i` of class `c` is `[100 c + i, c]`."""
    return [
        tf.data.Dataset.from_tensor_slices(
            np.stack([100 * c + np.arange(size), np.full(size, c)], axis=1).astype(np.float32))
        for c, size in enumerate(sizes)
    ]


def _as_numpy(dataset, num):
    return [tf.nest.map_structure(lambda t: t.numpy(), e) for e in dataset.take(num)]


def _check_episode(episode, num_ways, num_shots, num_queries):
    """Checks the contract on `[id, class]` features; returns the true class of each label."""
    np.testing.assert_array_equal(episode[SUPPORT_Y], np.repeat(np.arange(num_ways), num_shots))
    np.testing.assert_array_equal(episode[QUERY_Y], np.repeat(np.arange(num_ways), num_queries))
    support, query = episode[SUPPORT_X], episode[QUERY_X]
    assert support.shape == (num_ways * num_shots, 2) and query.shape == (num_ways * num_queries, 2)
    ids = np.concatenate([support[:, 0], query[:, 0]])
    assert len(np.unique(ids)) == len(ids), "an example is repeated or a query is in the support"
    support_classes = support[:, 1].reshape(num_ways, num_shots)
    query_classes = query[:, 1].reshape(num_ways, num_queries)
    classes = support_classes[:, 0]
    np.testing.assert_array_equal(support_classes, np.repeat(classes[:, None], num_shots, 1))
    np.testing.assert_array_equal(query_classes, np.repeat(classes[:, None], num_queries, 1))
    assert len(np.unique(classes)) == num_ways, "a class is drawn twice"
    return tuple(classes.astype(int))


def test_in_memory_episodes_satisfy_the_contract():
    sizes = [5, 6, 7, 8, 9, 10]
    data = _id_data(sizes)
    episodes = _as_numpy(episode_dataset(data, num_ways=4, num_shots=2, num_queries=3), 300)
    classes = [_check_episode(e, 4, 2, 3) for e in episodes]
    # Labels are a random permutation of the drawn classes, not their sorted order.
    assert any(list(c) != sorted(c) for c in classes)
    assert len({c[0] for c in classes}) == len(sizes)
    # Every example of every class (including the last of the largest) gets drawn.
    seen = np.unique(np.concatenate([np.concatenate([e[SUPPORT_X], e[QUERY_X]])[:, 0]
                                     for e in episodes]))
    np.testing.assert_array_equal(seen, np.arange(sum(sizes)))


def test_classes_are_drawn_uniformly():
    num_classes, num_ways, trials = 6, 3, 600
    data = _id_data([5] * num_classes)
    ds = episode_dataset(data, num_ways=num_ways, num_shots=1, num_queries=1, seed=1)
    counts = np.bincount(
        [c for e in _as_numpy(ds, trials) for c in _check_episode(e, num_ways, 1, 1)],
        minlength=num_classes,
    )
    # Each class is in an episode with probability N / C: a Binomial count, 5 sigma.
    p = num_ways / num_classes
    z = NormalDist().inv_cdf(1 - 1e-7)
    assert np.all(np.abs(counts - trials * p) <= z * np.sqrt(trials * p * (1 - p))), counts


def test_static_shapes_and_batching_keeps_each_episode():
    data = ClassIndexedData(np.random.default_rng(0).random([30, 3, 2]), np.arange(30) % 5)
    batched = episode_dataset(data, 3, 2, 4, meta_batch_size=4, seed=7)
    assert batched.element_spec == {
        SUPPORT_X: tf.TensorSpec([4, 6, 3, 2], tf.float32),
        SUPPORT_Y: tf.TensorSpec([4, 6], tf.int32),
        QUERY_X: tf.TensorSpec([4, 12, 3, 2], tf.float32),
        QUERY_Y: tf.TensorSpec([4, 12], tf.int32),
    }
    single = _as_numpy(episode_dataset(data, 3, 2, 4, seed=7), 8)
    for b, batch in enumerate(_as_numpy(batched, 2)):
        for i in range(4):
            for key in batch:
                np.testing.assert_array_equal(batch[key][i], single[4 * b + i][key])


def test_same_seed_same_episodes_other_seed_other_episodes():
    data = _id_data([6] * 8)
    first = _as_numpy(episode_dataset(data, 5, 1, 2, seed=3), 10)
    np.testing.assert_equal(_as_numpy(episode_dataset(data, 5, 1, 2, seed=3), 10), first)
    other = _as_numpy(episode_dataset(data, 5, 1, 2, seed=4), 10)
    assert not all(np.array_equal(a[SUPPORT_X], b[SUPPORT_X])
                   for a, b in zip(first, other, strict=True))


def test_finite_episodes_are_a_fixed_set():
    ds = episode_dataset(_id_data([4] * 5), 2, 1, 1, meta_batch_size=2, num_episodes=6)
    first = _as_numpy(ds, 100)
    assert len(first) == 3
    np.testing.assert_equal(_as_numpy(ds, 100), first)


def test_integer_examples_become_float32_unscaled():
    data = ClassIndexedData(np.arange(12, dtype=np.uint8)[:, None] * 20, np.arange(12) // 3)
    episode = next(iter(episode_dataset(data, 2, 1, 2)))
    assert episode[SUPPORT_X].dtype == tf.float32 and episode[QUERY_X].dtype == tf.float32
    support_classes = episode[SUPPORT_X].numpy()[:, 0] // 60
    query_classes = episode[QUERY_X].numpy()[:, 0].reshape(2, 2) // 60
    np.testing.assert_array_equal(query_classes, np.repeat(support_classes[:, None], 2, 1))


def test_rotated_classes_are_rotated_copies():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 1000, size=[9, 4, 4, 1]).astype(np.float32)
    data = ClassIndexedData(images, np.arange(9) // 3)
    rotations = {(j, k): np.rot90(images[j], k, axes=(0, 1)) for j in range(9) for k in range(4)}
    ds = episode_dataset(data, num_ways=5, num_shots=1, num_queries=2, rotations=True)
    turns_seen = set()
    for episode in _as_numpy(ds, 40):
        x = np.concatenate([episode[SUPPORT_X].reshape(5, 1, 4, 4, 1),
                            episode[QUERY_X].reshape(5, 2, 4, 4, 1)], axis=1)
        pool_classes = []
        for label in range(5):
            matches = [[key for key, r in rotations.items() if np.array_equal(r, image)]
                       for image in x[label]]
            assert all(len(m) == 1 for m in matches), "not a rotated copy of one example"
            keys = [m[0] for m in matches]
            # One class and one rotation per label, three distinct examples of that class.
            assert len({(j // 3, k) for j, k in keys}) == 1
            assert len({j for j, _ in keys}) == 3
            pool_classes.append((keys[0][0] // 3, keys[0][1]))
            turns_seen.add(keys[0][1])
        assert len(set(pool_classes)) == 5
    assert turns_seen == {0, 1, 2, 3}


class TestEpisodeErrors:
    @pytest.mark.parametrize("arg", ["num_ways", "num_shots", "num_queries"])
    @pytest.mark.parametrize("value", [0, -1, 2.5])
    def test_non_positive_counts(self, arg, value):
        kwargs = {"num_ways": 2, "num_shots": 1, "num_queries": 1, arg: value}
        with pytest.raises(ValueError, match=f"{arg}={value}"):
            episode_dataset(_id_data([4] * 3), **kwargs)

    def test_more_ways_than_classes(self):
        with pytest.raises(ValueError, match=r"num_ways=4.*only 3 classes.*num_ways <= 3"):
            episode_dataset(_id_data([4] * 3), 4, 1, 1)
        with pytest.raises(ValueError, match=r"num_ways=13.*only 12 classes \(3 classes x 4"):
            episode_dataset(ClassIndexedData(np.zeros([6, 2, 2, 1]), np.arange(6) // 2),
                            13, 1, 1, rotations=True)

    def test_class_smaller_than_shots_plus_queries(self):
        data = ClassIndexedData(np.zeros([9, 1]), np.array([0] * 5 + [1] * 4), ["cat", "dog"])
        with pytest.raises(ValueError, match=r"Class 'dog' has 4 examples.*= 2 \+ 3"):
            episode_dataset(data, 2, 2, 3)

    @pytest.mark.parametrize("shape", [(8, 4), (8, 4, 4), (8, 4, 5, 1)])
    def test_rotations_need_square_hwc_images(self, shape):
        data = ClassIndexedData(np.zeros(shape), np.arange(8) // 2)
        with pytest.raises(ValueError, match=r"square images in HWC.*examples.shape=\(8, 4"):
            episode_dataset(data, 2, 1, 1, rotations=True)

    def test_batching_errors(self):
        with pytest.raises(ValueError, match="meta_batch_size=0"):
            episode_dataset(_id_data([4] * 3), 2, 1, 1, meta_batch_size=0)
        with pytest.raises(ValueError, match="num_episodes=5, which is not a multiple"):
            episode_dataset(_id_data([4] * 3), 2, 1, 1, meta_batch_size=2, num_episodes=5)
        with pytest.raises(ValueError, match="seed=-1"):
            episode_dataset(_id_data([4] * 3), 2, 1, 1, seed=-1)

    def test_data_must_be_class_indexed(self):
        with pytest.raises(TypeError, match="ClassIndexedData"):
            episode_dataset(np.zeros([4, 2]), 2, 1, 1)


def test_streaming_episodes_satisfy_the_contract():
    sizes = [7, 5, 6, 8, 9]
    ds = streaming_episode_dataset(_id_class_datasets(sizes), sizes, num_ways=3, num_shots=1,
                                   num_queries=2, seed=2)
    episodes = _as_numpy(ds, 80)
    classes = [_check_episode(e, 3, 1, 2) for e in episodes]
    assert any(list(c) != sorted(c) for c in classes)
    # Class 0's chunks of one epoch (7 // 3 = 2 chunks) are disjoint: shuffle, then batch.
    chunks = [np.concatenate([e[SUPPORT_X][e[SUPPORT_Y] == label, 0],
                              e[QUERY_X][e[QUERY_Y] == label, 0]])
              for e, c in zip(episodes, classes, strict=True)
              for label, cls in enumerate(c) if cls == 0]
    chunks = chunks[:len(chunks) // 2 * 2]
    assert len(chunks) >= 6
    for first, second in zip(chunks[0::2], chunks[1::2], strict=True):
        assert not set(first) & set(second)
    assert len({tuple(np.sort(np.concatenate(chunks[i:i + 2]))) for i in (0, 2, 4)}) > 1


def test_streaming_is_deterministic_static_and_finite():
    sizes = [4, 5, 6, 4]

    def build(seed, **kwargs):
        return streaming_episode_dataset(_id_class_datasets(sizes), sizes, 2, 1, 1,
                                         meta_batch_size=3, seed=seed, **kwargs)

    ds = build(5)
    assert ds.element_spec[SUPPORT_X] == tf.TensorSpec([3, 2, 2], tf.float32)
    assert ds.element_spec[QUERY_Y] == tf.TensorSpec([3, 2], tf.int32)
    first = _as_numpy(ds, 6)
    np.testing.assert_equal(_as_numpy(ds, 6), first)
    np.testing.assert_equal(_as_numpy(build(5), 6), first)
    other = _as_numpy(build(6), 6)
    assert not all(np.array_equal(a[SUPPORT_X], b[SUPPORT_X])
                   for a, b in zip(first, other, strict=True))
    from_generator = streaming_episode_dataset(
        (d for d in _id_class_datasets(sizes)), sizes, 2, 1, 1, meta_batch_size=3, seed=5)
    np.testing.assert_equal(_as_numpy(from_generator, 6), first)
    finite = build(5, num_episodes=6)
    assert len(_as_numpy(finite, 100)) == 2
    np.testing.assert_equal(_as_numpy(finite, 100), first[:2])


class TestStreamingErrors:
    def test_more_ways_than_classes(self):
        with pytest.raises(ValueError, match=r"num_ways=4.*only 3 classes"):
            streaming_episode_dataset(_id_class_datasets([4] * 3), [4] * 3, 4, 1, 1)

    def test_small_class(self):
        with pytest.raises(ValueError, match=r"Class 1 has 2 examples.*= 1 \+ 2"):
            streaming_episode_dataset(_id_class_datasets([4, 2]), [4, 2], 2, 1, 2)

    def test_sizes_must_match_the_datasets(self):
        with pytest.raises(ValueError, match=r"class_sizes\[1\]=9.*holds 4 examples"):
            streaming_episode_dataset(_id_class_datasets([4, 4]), [4, 9], 2, 1, 1)
        with pytest.raises(ValueError, match="2 class datasets and 3 class sizes"):
            streaming_episode_dataset(_id_class_datasets([4, 4]), [4, 4, 4], 2, 1, 1)

    def test_classes_must_share_one_static_spec(self):
        mixed = [*_id_class_datasets([4]), tf.data.Dataset.from_tensor_slices(np.zeros([4, 3]))]
        with pytest.raises(ValueError, match="one static shape and dtype. Class 1"):
            streaming_episode_dataset(mixed, [4, 4], 2, 1, 1)
        pairs = [d.map(lambda x: (x, 0)) for d in _id_class_datasets([4, 4])]
        with pytest.raises(ValueError, match="Drop the labels"):
            streaming_episode_dataset(pairs, [4, 4], 2, 1, 1)
        with pytest.raises(TypeError, match="Class 0 is a ndarray"):
            streaming_episode_dataset([np.zeros([4, 2])], [4], 1, 1, 1)

    def test_bad_counts(self):
        with pytest.raises(ValueError, match="num_queries=0"):
            streaming_episode_dataset(_id_class_datasets([4, 4]), [4, 4], 2, 1, 0)
        with pytest.raises(ValueError, match="shuffle_buffer=0"):
            streaming_episode_dataset(_id_class_datasets([4, 4]), [4, 4], 2, 1, 1,
                                      shuffle_buffer=0)


def _write_tensor_files(tmp_path, sizes):
    class_files = []
    for c, size in enumerate(sizes):
        files = []
        for i in range(size):
            path = str(tmp_path / f"class{c}_{i}.tensor")
            tf.io.write_file(path, tf.io.serialize_tensor(tf.constant([100.0 * c + i, c])))
            files.append(path)
        class_files.append(files)
    return class_files


def test_class_datasets_from_files_stream_episodes(tmp_path):
    sizes = [3, 4, 5]
    class_files = _write_tensor_files(tmp_path, sizes)

    def decode(path):
        return tf.ensure_shape(tf.io.parse_tensor(tf.io.read_file(path), tf.float32), [2])

    datasets = class_datasets_from_files(class_files, decode)
    assert [len(list(d)) for d in datasets] == sizes
    ds = streaming_episode_dataset(datasets, sizes, 2, 1, 2, seed=1)
    for episode in _as_numpy(ds, 10):
        _check_episode(episode, 2, 1, 2)


def test_class_datasets_from_files_errors(tmp_path):
    files = _write_tensor_files(tmp_path, [2])
    with pytest.raises(ValueError, match="non-empty list of file paths per class"):
        class_datasets_from_files([files[0], []], tf.io.read_file)
    with pytest.raises(ValueError, match="non-empty list of file paths per class"):
        class_datasets_from_files(files[0][0], tf.io.read_file)

    def unknown_shape(path):
        return tf.io.parse_tensor(tf.io.read_file(path), tf.float32)

    with pytest.raises(ValueError, match="static shape.*ensure_shape"):
        class_datasets_from_files(files, unknown_shape)


def test_first_episode_starts_the_endless_stream_there():
    data = ClassIndexedData(np.arange(40.0)[:, None], np.arange(40) // 4)
    whole = list(episode_dataset(data, 3, 1, 2, meta_batch_size=2, seed=5).take(4))
    later = list(episode_dataset(data, 3, 1, 2, meta_batch_size=2, seed=5,
                                 first_episode=4).take(2))
    for a, b in zip(whole[2:], later, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    with pytest.raises(ValueError, match=r"first_episode=-1"):
        episode_dataset(data, 3, 1, 2, seed=5, first_episode=-1)
    with pytest.raises(ValueError, match=r"finite set \(num_episodes=4\).*first_episode=2"):
        episode_dataset(data, 3, 1, 2, seed=5, num_episodes=4, first_episode=2)
