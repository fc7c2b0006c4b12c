"""Training patches (bfcnn.training.images, sampler and streaming): crops at integer offsets, symmetries, weights, bad files.

All images are generated in tmp_path and tiny, so brute force can check every patch.
"""

import logging

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from bfcnn.config import DatasetConfig, ImageFolderSource, InputSource, TfdsSource
from bfcnn.errors import BfcnnError
from bfcnn.training.images import fit_to_patch, load_directory
from bfcnn.training.sampler import InMemorySampler
from bfcnn.training.streaming import streaming_dataset

IDENTITY = ("identity",)
FLIPS = ("identity", "lr", "ud", "rot180")
ROTATIONS = ("identity", "rot90", "rot180", "rot270")
ALL = FLIPS + ("rot90", "rot270", "transpose", "antitranspose")

TRANSFORMS = {  # on one [P, P, C] patch
    "identity": lambda x: x,
    "lr": lambda x: x[:, ::-1],
    "ud": lambda x: x[::-1],
    "rot90": lambda x: np.rot90(x, 1),
    "rot180": lambda x: np.rot90(x, 2),
    "rot270": lambda x: np.rot90(x, 3),
    "transpose": lambda x: x.transpose(1, 0, 2),
    "antitranspose": lambda x: np.rot90(x, 2).transpose(1, 0, 2),
}


def random_image(h, w, c=1, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def crop_index(images, p):
    """Every integer-offset p x p crop of the images, as bytes -> image index."""
    index = {}
    for k, im in enumerate(images):
        for i in range(im.shape[0] - p + 1):
            for j in range(im.shape[1] - p + 1):
                index[np.ascontiguousarray(im[i:i + p, j:j + p]).tobytes()] = k
    return index


def identify(patch, crops):
    """(transform name, source image) of a patch, or None when it is no transformed crop."""
    patch = np.asarray(patch).astype(np.uint8)
    for name, transform in TRANSFORMS.items():
        # Every transform here is an involution except the quarter turns, which invert each other.
        inverse = {"rot90": "rot270", "rot270": "rot90"}.get(name, name)
        key = np.ascontiguousarray(TRANSFORMS[inverse](patch)).tobytes()
        if key in crops:
            return name, crops[key]
    return None


def save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)


# ----------------------------------------------------------------------------- load_directory


def test_load_directory_skips_a_corrupt_file_with_one_warning(tmp_path, caplog):
    save(tmp_path / "a.png", random_image(20, 24, seed=1))
    save(tmp_path / "sub" / "b.png", random_image(30, 20, seed=2))
    (tmp_path / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with caplog.at_level(logging.WARNING, logger="bfcnn.train"):
        images, skipped = load_directory(tmp_path, "gray", 16, "pad")
    assert skipped == 1 and len(images) == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "bfcnn.train"]
    assert len(warnings) == 1 and "broken.png" in warnings[0].getMessage()
    np.testing.assert_array_equal(images[0], random_image(20, 24, seed=1))


def test_load_directory_pads_or_skips_small_images(tmp_path):
    save(tmp_path / "big.png", random_image(20, 20, seed=1))
    save(tmp_path / "small.png", random_image(3, 5, seed=2))
    images, skipped = load_directory(tmp_path, "gray", 16, "pad")
    assert skipped == 0 and sorted(im.shape for im in images) == [(16, 16, 1), (20, 20, 1)]
    images, skipped = load_directory(tmp_path, "gray", 16, "skip")
    assert skipped == 1 and [im.shape for im in images] == [(20, 20, 1)]
    with pytest.raises(BfcnnError, match=str(tmp_path.name)):
        load_directory(tmp_path, "gray", 32, "skip")


def test_fit_to_patch_reflects_repeatedly_when_much_smaller():
    image = random_image(3, 5, seed=3)
    padded = fit_to_patch(image, 16, "pad")
    assert padded.shape == (16, 16, 1)
    rows = [0, 1, 2, 2, 1, 0] * 3  # symmetric reflection, repeated: period 2 * size
    cols = [0, 1, 2, 3, 4, 4, 3, 2, 1, 0] * 2
    np.testing.assert_array_equal(padded, image[np.array(rows[:16])[:, None], np.array(cols[:16])[None, :]])
    wide = random_image(4, 40, seed=4)
    assert fit_to_patch(wide, 16, "pad").shape == (16, 40, 1)
    assert fit_to_patch(wide, 16, "skip") is None
    assert fit_to_patch(wide, 4, "skip") is wide


# ----------------------------------------------------------------------------- InMemorySampler


@pytest.fixture(scope="module")
def sources():
    return [random_image(9, 11, 3, seed=10), random_image(12, 8, 3, seed=11), random_image(10, 10, 3, seed=12)]


def test_sampler_shape_dtype_and_seeds(sources):
    sampler = InMemorySampler(sources, [1.0, 1.0, 1.0], patch_size=5, patches_per_image=2)
    batch = sampler.sample(6, tf.constant([0, 1], tf.int64))
    assert batch.shape == (6, 5, 5, 3) and batch.dtype == tf.float32
    again = sampler.sample(6, tf.constant([0, 1], tf.int64))
    other = sampler.sample(6, tf.constant([0, 2], tf.int64))
    np.testing.assert_array_equal(batch.numpy(), again.numpy())
    assert not np.array_equal(batch.numpy(), other.numpy())
    traced = tf.function(lambda s: sampler.sample(6, s))(tf.constant([0, 1], tf.int64))
    np.testing.assert_array_equal(traced.numpy(), batch.numpy())


@pytest.mark.parametrize("flips, rotations, group", [
    (True, True, ALL), (True, False, FLIPS), (False, True, ROTATIONS), (False, False, IDENTITY)])
def test_sampler_patches_are_integer_crops_up_to_symmetry(sources, flips, rotations, group):
    p = 5
    sampler = InMemorySampler(sources, [1.0, 1.0, 1.0], patch_size=p, patches_per_image=1, flips=flips,
                              rotations=rotations)
    crops = crop_index(sources, p)
    batch = sampler.sample(256, tf.constant([7, 0], tf.int64)).numpy()
    found = [identify(patch, crops) for patch in batch]
    assert None not in found, "a patch is no integer-offset crop of a source (up to the allowed symmetries)"
    seen = {name for name, _ in found}
    assert seen == set(group), f"transforms {seen}, expected exactly {set(group)}"
    assert {k for _, k in found} == {0, 1, 2}


def test_sampler_weights_are_respected():
    # Three images, each of a constant value: two of a source of weight 3, one of weight 1.
    images = [np.full((8, 8, 1), v, np.uint8) for v in (10, 20, 200)]
    sampler = InMemorySampler(images, [1.5, 1.5, 1.0], patch_size=4, patches_per_image=1)
    values = sampler.sample(4000, tf.constant([1, 2], tf.int64)).numpy()[:, 0, 0, 0]
    share = np.mean(values < 100)
    assert abs(share - 0.75) < 0.03, share  # 0.75 +- 4 standard deviations
    assert abs(np.mean(values == 10) - 0.375) < 0.03


def test_sampler_patches_per_image():
    images = [np.full((6, 6, 1), 10 * k, np.uint8) for k in range(20)]
    sampler = InMemorySampler(images, [1.0] * 20, patch_size=3, patches_per_image=4)
    values = sampler.sample(10, tf.constant([3, 4], tf.int64)).numpy()[:, 0, 0, 0]
    groups = [values[0:4], values[4:8], values[8:10]]
    assert all(len(set(g)) == 1 for g in groups), values
    assert len({g[0] for g in groups}) > 1, values
    single = InMemorySampler(images, [1.0] * 20, patch_size=3, patches_per_image=1)
    assert len(set(single.sample(12, tf.constant([3, 4], tf.int64)).numpy()[:, 0, 0, 0])) > 4



def test_sampler_release_frees_the_images_as_it_copies_them_and_samples_the_same():
    """The trainer's decoded images, their flat copy and the tensor were all in memory at once
    (3x the dataset); with `release` each image is dropped once copied."""
    import gc
    import weakref

    class Image_(np.ndarray):  # an ndarray that can be weakly referenced
        pass

    def make():
        return [np.random.default_rng(k).integers(0, 256, (9 + k, 7, 1), dtype=np.uint8).view(Image_)
                for k in range(4)]

    kept = InMemorySampler(make(), [1.0] * 4, patch_size=4, patches_per_image=2)
    images = make()
    refs = [weakref.ref(im) for im in images]
    released = InMemorySampler(images, [1.0] * 4, patch_size=4, patches_per_image=2, release=True)
    gc.collect()
    assert images == [None] * 4 and all(ref() is None for ref in refs)
    seed = tf.constant([5, 6], tf.int64)
    np.testing.assert_array_equal(released.sample(8, seed).numpy(), kept.sample(8, seed).numpy())


def test_sampler_rejects_bad_input(sources):
    with pytest.raises(ValueError, match="smaller than patch_size"):
        InMemorySampler(sources, [1.0, 1.0, 1.0], patch_size=10)
    with pytest.raises(ValueError, match="at least one image"):
        InMemorySampler([], [], patch_size=4)
    with pytest.raises(ValueError, match="weights"):
        InMemorySampler(sources, [1.0], patch_size=4)


# ----------------------------------------------------------------------------- streaming


def dataset_config(directory_or_sources, **overrides):
    inputs = directory_or_sources if isinstance(directory_or_sources, tuple) else \
        (InputSource(directory=str(directory_or_sources)),)
    settings = dict(inputs=inputs, color="gray", patch_size=8, batch_size=8, patches_per_image=2,
                    shuffle_buffer=16, cache=False)
    settings.update(overrides)
    return DatasetConfig(**settings)


def take(dataset, batches):
    return [b.numpy() for b in dataset.take(batches)]


@pytest.fixture
def stream_directory(tmp_path):
    images = [random_image(12, 10, seed=20), random_image(9, 16, seed=21),
              random_image(3, 2, seed=22)]  # the last one is far smaller than the patch
    for i, image in enumerate(images):
        save(tmp_path / f"img{i}.png", image)
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return tmp_path, images


def test_streaming_from_a_directory(stream_directory, caplog):
    directory, images = stream_directory
    config = dataset_config(directory)
    with caplog.at_level(logging.WARNING, logger="bfcnn.train"):
        batches = take(streaming_dataset(config.inputs, config, seed=0), 6)  # 48 patches, 8 epochs
    assert all(b.shape == (8, 8, 8, 1) and b.dtype == np.float32 for b in batches)
    crops = crop_index([fit_to_patch(im, 8, "pad") for im in images], 8)
    found = [identify(patch, crops) for batch in batches for patch in batch]
    assert None not in found
    assert {k for _, k in found} == {0, 1, 2}, "the tiny image is padded and used"
    # bfcnn's own warnings: TensorFlow's AutoGraph may add some of its own in a long test session
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "bfcnn.train"]
    assert len(warnings) == 1 and "corrupt.jpg" in warnings[0]


def test_streaming_skips_small_images_when_asked(stream_directory):
    directory, images = stream_directory
    config = dataset_config(directory, small_images="skip", flips=False, rotations=False)
    crops = crop_index(images[:2], 8)
    found = [identify(patch, crops) for batch in take(streaming_dataset(config.inputs, config, 0), 3)
             for patch in batch]
    assert None not in found and {name for name, _ in found} == {"identity"}


def test_streaming_errors_name_the_source(tmp_path):
    (tmp_path / "empty").mkdir()
    config = dataset_config(tmp_path / "empty")
    with pytest.raises(BfcnnError, match="empty"):
        streaming_dataset(config.inputs, config, 0)


def test_streaming_refuses_a_source_with_no_usable_image(tmp_path):
    """Repeated, such a source made the training pipeline wait for ever (nothing to filter in)."""
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_text("not an image")
    (tmp_path / "bad" / "b.jpg").write_bytes(b"")
    save(tmp_path / "good" / "a.png", random_image(12, 12, seed=23))
    save(tmp_path / "small" / "a.png", random_image(4, 4, seed=24))
    mixed = (InputSource(directory=str(tmp_path / "good")), InputSource(directory=str(tmp_path / "bad")))
    for inputs, words in ((tmp_path / "bad", "every image is unreadable"), (mixed, "every image is unreadable")):
        config = dataset_config(inputs)
        with pytest.raises(BfcnnError, match=f"no usable image in .*bad: {words}"):
            streaming_dataset(config.inputs, config, 0)
    config = dataset_config(tmp_path / "small", small_images="skip")
    with pytest.raises(BfcnnError, match="smaller than dataset.patch_size=8"):
        streaming_dataset(config.inputs, config, 0)



def test_streaming_refuses_a_source_whose_files_are_truncated(tmp_path):
    """A truncated JPEG has a readable header: screening headers alone let the run wait for ever."""
    for i in range(2):
        path = tmp_path / "cut" / f"t{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(random_image(32, 32, 3, seed=40 + i)).save(path, quality=90)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with Image.open(path) as image:
            assert image.size == (32, 32)  # the header is intact
    config = dataset_config(tmp_path / "cut", color="rgb")
    with pytest.raises(BfcnnError, match="no usable image in .*cut: every image is unreadable"):
        streaming_dataset(config.inputs, config, 0)
    save(tmp_path / "cut" / "t9.png", random_image(12, 12, 3, seed=42))  # one good file is enough
    assert take(streaming_dataset(config.inputs, config, 0), 1)[0].shape == (8, 8, 8, 3)



def test_header_sizes_do_not_decode_png_pixels(tmp_path, monkeypatch):
    """`estimated_cache_bytes` reads headers only: Pillow's getexif() on a PNG decoded it whole."""
    from bfcnn.training.images import header_size

    save(tmp_path / "plain.png", random_image(30, 40, 3, seed=50))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the axes swap
    Image.fromarray(random_image(30, 40, 3, seed=51)).save(tmp_path / "rotated.png", exif=exif)
    Image.fromarray(random_image(30, 40, 3, seed=52)).save(tmp_path / "rotated.jpg", exif=exif)
    loads = []
    original = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: loads.append(self.format) or original(self))
    assert header_size(tmp_path / "plain.png") == (30, 40)
    assert loads == []
    assert header_size(tmp_path / "rotated.png") == (40, 30)
    assert header_size(tmp_path / "rotated.jpg") == (40, 30)



def test_cache_estimate_counts_small_images_as_the_cache_holds_them(tmp_path):
    """Padded to the patch (the default) or skipped: the estimate decides whether to cache."""
    from bfcnn.training.images import estimated_cache_bytes, load_directory

    save(tmp_path / "small" / "a.png", random_image(10, 6, 3, seed=60))
    save(tmp_path / "small" / "b.png", random_image(40, 50, 3, seed=61))
    inputs = (InputSource(directory=str(tmp_path / "small")),)
    for small_images in ("pad", "skip"):
        loaded, _ = load_directory(tmp_path / "small", "rgb", 32, small_images)
        assert estimated_cache_bytes(inputs, "rgb", False, 32, small_images) == sum(im.nbytes for im in loaded)
    assert estimated_cache_bytes(inputs, "rgb", False, 32, "pad") == (32 * 32 + 40 * 50) * 3


# ----------------------------------------------------------------------------- tensorflow-datasets


def test_streaming_tfds_image_folder(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    images = [random_image(10, 12, 3, seed=30), random_image(16, 9, 3, seed=31), random_image(11, 11, 3, seed=32)]
    for i, image in enumerate(images):
        save(tmp_path / "train" / ("cats" if i < 2 else "dogs") / f"x{i}.png", image)
    (tmp_path / "train" / "dogs" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # dropped
    source = InputSource(image_folder=ImageFolderSource(root_dir=str(tmp_path), split="train"))
    config = dataset_config((source,), color="rgb")
    batches = take(streaming_dataset(config.inputs, config, 0), 4)
    assert all(b.shape == (8, 8, 8, 3) and b.dtype == np.float32 for b in batches)
    crops = crop_index(images, 8)
    found = [identify(patch, crops) for batch in batches for patch in batch]
    assert None not in found and {k for _, k in found} == {0, 1, 2}
    gray = dataset_config((source,), color="gray")
    assert take(streaming_dataset(gray.inputs, gray, 0), 1)[0].shape == (8, 8, 8, 1)


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
    """A dataset of two images (rgb 'image', 1-channel 'gray') and a 'label', prepared in a temporary data_dir."""
    tfds = pytest.importorskip("tensorflow_datasets")
    data_dir = tmp_path_factory.mktemp("tfds")
    rgb = [random_image(10, 12, 3, seed=40), random_image(12, 9, 3, seed=41)]
    gray = [random_image(9, 9, 1, seed=42), random_image(13, 10, 1, seed=43)]

    class BfcnnTinyImages(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "gray": tfds.features.Image(shape=(None, None, 1)),
                "label": tfds.features.ClassLabel(num_classes=2),
            }))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(2):
                yield i, {"image": rgb[i], "gray": gray[i], "label": i}

    BfcnnTinyImages(data_dir=str(data_dir)).download_and_prepare()
    return str(data_dir), rgb, gray


@pytest.mark.parametrize("key, color", [("image", "rgb"), ("gray", "gray"), ("gray", "rgb"), ("image", "gray")])
def test_streaming_tfds_by_name(tiny_tfds, key, color):
    data_dir, rgb, gray = tiny_tfds
    source = InputSource(tfds=TfdsSource(name="bfcnn_tiny_images", split="train", data_dir=data_dir, image_key=key))
    config = dataset_config((source,), color=color)
    batches = take(streaming_dataset(config.inputs, config, 0), 2)
    channels = 3 if color == "rgb" else 1
    assert all(b.shape == (8, 8, 8, channels) for b in batches)
    if key == "image" and color == "rgb":
        expected = rgb
    elif key == "gray":
        expected = [np.repeat(g, channels, -1) for g in gray]
    else:
        return  # rgb to gray conversion weights differ slightly between Pillow and TF
    crops = crop_index(expected, 8)
    assert None not in [identify(patch, crops) for batch in batches for patch in batch]



@pytest.mark.parametrize("key, words", [("label", r"'label' \(tfds.image_key\) is not an image"),
                                        ("photo", r"no feature 'photo' \(tfds.image_key\)")])
def test_tfds_image_key_must_name_an_image_feature(tiny_tfds, key, words):
    """A label as image_key gave an 81-line traceback from inside tf.data."""
    source = InputSource(tfds=TfdsSource(name="bfcnn_tiny_images", split="train", data_dir=tiny_tfds[0], image_key=key))
    config = dataset_config((source,))
    with pytest.raises(BfcnnError, match=words + r".*image features: \['gray', 'image'\]"):
        streaming_dataset(config.inputs, config, 0)


def test_tfds_missing_dataset_is_a_clear_error(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    source = InputSource(tfds=TfdsSource(name="bfcnn_no_such_dataset", data_dir=str(tmp_path)))
    config = dataset_config((source,))
    with pytest.raises(BfcnnError, match="bfcnn_no_such_dataset.*never downloads") as error:
        streaming_dataset(config.inputs, config, 0)
    message = str(error.value)
    assert len(message.splitlines()) == 1 and len(message) < 600, "not tfds's list of every dataset it knows"
    assert "tfds build bfcnn_no_such_dataset" in message


def test_load_directory_says_why_no_image_is_usable(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    save(tmp_path / "small.png", random_image(6, 6, seed=3))
    with pytest.raises(BfcnnError, match=r"no usable image in .*: 1 of 2 unreadable, 1 smaller than "
                                         r"dataset.patch_size=16 \(small_images: skip"):
        load_directory(tmp_path, "gray", 16, "skip")
    images, skipped = load_directory(tmp_path, "gray", 16, "pad")
    assert skipped == 1 and [im.shape for im in images] == [(16, 16, 1)]
