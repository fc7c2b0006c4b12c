"""The evaluation protocol: unclipped noise, quantized scoring, reproducible noise, hand-checked PSNR."""

import math
import re

import numpy as np
import pytest

from bfcnn.evaluation import (
    add_noise,
    evaluate_denoiser,
    evaluate_denoisers,
    mae,
    noise_seed,
    psnr,
    ssim,
    to_uint8,
)


@pytest.fixture
def images():
    from skimage import data

    camera = data.camera()
    return [camera[100:132, 200:240, None], camera[300:340, 150:180, None]]


def test_noise_is_neither_clipped_nor_rounded():
    clean = np.zeros((32, 32, 1), np.uint8)
    clean[:, 16:] = 255
    noisy = add_noise(clean, 50.0, noise_seed(0, 0, 50.0))
    assert noisy.dtype == np.float32
    assert noisy.min() < 0 and noisy.max() > 255
    assert np.any(noisy != np.round(noisy))


def test_psnr_matches_a_hand_computation():
    clean = np.zeros((2, 2, 1), np.uint8)
    estimate = np.array([[0.2, -7.0], [300.0, 9.6]], np.float32)[..., None]  # scored as 0, 0, 255, 10
    mse = (255.0**2 + 10.0**2) / 4
    assert psnr(clean, estimate) == pytest.approx(10 * math.log10(255.0**2 / mse), abs=1e-12)
    assert to_uint8(estimate)[..., 0].tolist() == [[0, 0], [255, 10]]


def test_mae_quantizes_estimates_but_not_noisy_images():
    clean = np.full((1, 2, 1), 100, np.uint8)
    noisy = np.array([[[100.4], [-20.0]]], np.float32)
    assert mae(clean, noisy, quantize=False) == pytest.approx((0.4 + 120.0) / 2, rel=1e-6)
    assert mae(clean, noisy) == pytest.approx((0.0 + 100.0) / 2)


def test_a_perfect_denoiser_scores_inf_and_ssim_one(images):
    results = evaluate_denoisers({"oracle": lambda noisy, sigma: images[0].astype(np.float32) + 0.4},
                                 images[:1], [25])
    assert results[25.0]["oracle"]["psnr"] == float("inf")
    assert results[25.0]["oracle"]["ssim"] == pytest.approx(1.0)
    assert ssim(images[0], images[0]) == pytest.approx(1.0)


def test_identity_denoiser_scores_the_noisy_psnr(images):
    results = evaluate_denoisers({"identity": lambda noisy, sigma: noisy}, images, [15, 50], metrics=("psnr", "mae"))
    for entry in results.values():
        assert entry["identity"]["psnr"] == entry["noisy"]["psnr"]
        assert entry["identity"]["per_image"]["psnr"] == entry["noisy"]["per_image"]["psnr"]
        assert entry["identity"]["mae"] <= entry["noisy"]["mae"] + 0.5  # rounding and clipping only
        assert entry["identity"]["seconds_per_image"] >= 0
    legacy = evaluate_denoiser(lambda noisy: noisy, images, [15], with_ssim=False)
    assert legacy == {15.0: {"noisy_psnr": results[15.0]["noisy"]["psnr"], "psnr": results[15.0]["noisy"]["psnr"]}}


def test_noise_depends_on_seed_index_and_sigma_only(images):
    def draw(seed, index, sigma):
        return add_noise(images[index], sigma, noise_seed(seed, index, sigma))

    np.testing.assert_array_equal(draw(0, 1, 25), draw(0, 1, 25))
    assert not np.array_equal(draw(0, 1, 25), draw(1, 1, 25))
    unit_noise = [(draw(0, 0, sigma) - images[0].astype(np.float32)) / sigma for sigma in (25, 50)]
    assert not np.allclose(unit_noise[0], unit_noise[1])

    seen = {}

    def record(sigma, index, clean, noisy, estimates):
        seen.setdefault((sigma, index), []).append(noisy)

    identity = {"identity": lambda noisy, sigma: noisy}
    forward = evaluate_denoisers(identity, images, [25, 50], metrics=("psnr",), callback=record)
    backward = evaluate_denoisers(identity, images, [50, 25], metrics=("psnr",), callback=record)
    first_only = evaluate_denoisers(identity, images[:1], [25], metrics=("psnr",), callback=record)
    for runs in seen.values():
        for noisy in runs[1:]:
            np.testing.assert_array_equal(noisy, runs[0])
    assert forward[25.0]["noisy"] == backward[25.0]["noisy"]
    assert first_only[25.0]["noisy"]["per_image"]["psnr"][0] == forward[25.0]["noisy"]["per_image"]["psnr"][0]


def test_every_denoiser_sees_the_same_noisy_image(images):
    inputs = {"a": [], "b": []}

    def keep(name):
        def denoise(noisy, sigma):
            inputs[name].append(noisy.copy())
            return noisy

        return denoise

    evaluate_denoisers({"a": keep("a"), "b": keep("b")}, images, [25], metrics=("psnr",))
    for x, y in zip(inputs["a"], inputs["b"]):
        np.testing.assert_array_equal(x, y)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="'lpips'"):
        evaluate_denoisers({"a": lambda y, s: y}, [], [25], metrics=("lpips",))
    with pytest.raises(ValueError, match="noisy"):
        evaluate_denoisers({"noisy": lambda y, s: y}, [], [25])


def test_ssim_of_images_smaller_than_its_window():
    clean = np.arange(5 * 7, dtype=np.uint8).reshape(5, 7, 1) * 7
    assert ssim(clean, clean.astype(np.float32)) == pytest.approx(1.0)
    assert ssim(clean, clean.astype(np.float32) + 20) < 1.0


def test_eight_bit_noisy_images_are_clipped_and_rounded_before_any_denoiser():
    """What an 8-bit camera file holds; off by default (the published protocol leaves noise unclipped)."""
    clean = np.full((1, 16, 16, 1), 250, np.uint8)[0]
    seen = {}

    def record(noisy, sigma):
        seen[bool(seen)] = noisy
        return noisy

    plain = evaluate_denoisers({"identity": record}, [clean], [25], metrics=("mae",))
    eight = evaluate_denoisers({"identity": record}, [clean], [25], metrics=("mae",), eight_bit=True)
    unclipped, clipped = seen[False], seen[True]
    assert unclipped.max() > 255 and unclipped.dtype == np.float32
    np.testing.assert_array_equal(clipped, np.clip(np.round(unclipped), 0, 255))
    assert clipped.dtype == np.float32
    # the noisy row scores what the denoisers saw
    assert eight[25.0]["noisy"]["mae"] == pytest.approx(mae(clean, clipped, quantize=False))
    assert eight[25.0]["noisy"]["mae"] < plain[25.0]["noisy"]["mae"]


@pytest.mark.parametrize("score", [psnr, mae, ssim])
def test_scores_refuse_images_of_different_shapes(score):
    """numpy would broadcast them: psnr of a gray image against a color one was inf."""
    from bfcnn.errors import BfcnnError

    gray = np.full((10, 10, 1), 100, np.uint8)
    for other in (np.full((10, 10, 3), 100, np.float32), np.full((10, 10), 100, np.float32)):
        with pytest.raises(BfcnnError, match=rf"{score.__name__}: clean and estimate must have the same shape, "
                                             rf"got \(10, 10, 1\) and {re.escape(str(other.shape))}"):
            score(gray, other)


def test_bad_noise_levels_and_crop_sizes_are_named():
    from bfcnn.errors import BfcnnError
    from bfcnn.evaluation import center_crop

    clean = np.zeros((8, 8, 1), np.uint8)
    for sigma in (-1.0, float("nan"), float("inf"), "25", None):
        with pytest.raises(BfcnnError, match="sigma must be a finite number >= 0"):
            add_noise(clean, sigma, np.random.default_rng(0))
    assert add_noise(clean, 0, np.random.default_rng(0)).max() == 0
    for size in (0, -3, 2.5, True):
        with pytest.raises(BfcnnError, match="max_size must be a positive integer"):
            center_crop(clean, size)
    assert center_crop(clean, None) is clean and center_crop(clean, np.int64(4)).shape == (4, 4, 1)


def test_evaluate_denoisers_refuses_bad_sigmas_and_no_images_before_denoising(images):
    from bfcnn.errors import BfcnnError

    calls = []
    denoisers = {"identity": lambda noisy, sigma: calls.append(sigma) or noisy}
    for sigmas, message in [([25, -5], r"sigma must be a finite number >= 0 .*, got -5"),
                            ([float("nan")], "sigma must be a finite number >= 0"),
                            (25, r"sigmas must be a list of noise levels .* e.g. \[25\], got 25"),
                            ("25", "sigmas must be a list"), ([], "sigmas is empty")]:
        with pytest.raises(BfcnnError, match=message):
            evaluate_denoisers(denoisers, images, sigmas)
    for no_images in ([], iter([])):
        with pytest.raises(BfcnnError, match="no images to evaluate on"):
            evaluate_denoisers(denoisers, no_images, [25])
    assert calls == []
    # a generator of images serves every sigma, not the first alone
    results = evaluate_denoisers(denoisers, (image for image in images), [15, 25], metrics=("psnr",))
    assert [len(results[s]["noisy"]["per_image"]["psnr"]) for s in (15.0, 25.0)] == [2, 2]
