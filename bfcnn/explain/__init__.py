"""A bias-free denoiser as a per-pixel adaptive filter (Mohan et al., "Robust and interpretable
blind image denoising via bias-free convolutional neural networks", ICLR 2020).

A network made of convolutions, ReLUs and bias-free normalizations is piecewise linear
with no additive constant, so at every input `y` its output is `f(y) = A(y) y`, where
`A(y)` is its Jacobian at `y`. Row `i` of `A(y)` is the set of weights the network
averages the noisy pixels with to produce output pixel `i`: an adaptive filter that can be
drawn. Its singular values show the subspace the network projects the noisy image onto;
the paper finds that this subspace shrinks as the noise grows.

    >>> import bfcnn, bfcnn.explain
    >>> model = bfcnn.load_model("pyramid_gray_m")
    >>> weights = bfcnn.explain.adaptive_filter(model, noisy, pixel=(100, 120))   # [H, W, 1]
    >>> bfcnn.explain.reconstruction_error(model, noisy)                          # ~1e-7

Everything here works for models with biases too (`allow_bias=True`), but then
`f(y) = A(y) y + b(y)` and the rows of A are not the whole story; without the flag such a
model is refused with `NotBiasFreeError`.
"""

# Public as well, though outside `__all__` as before: the constants, `check_pixel` and `why_not_bias_free`.
from bfcnn.explain.bias_free import LINEARITY_TOLERANCE, NotBiasFreeError, require_bias_free, why_not_bias_free
from bfcnn.explain.filters import (
    BATCH_PIXELS,
    DEFAULT_BATCH_SIZE,
    Reconstruction,
    adaptive_filter,
    adaptive_filters,
    reconstruction,
    reconstruction_error,
)
from bfcnn.explain.inputs import as_model_input, check_pixel, crop_around, sample_pixels
from bfcnn.explain.measures import effective_support, filter_spread, off_centre_limit
from bfcnn.explain.spectrum import MAX_JACOBIAN_INPUTS, EffectiveDimension, effective_dimensionality, jacobian


def main(argv=None) -> int:
    """`python -m bfcnn.explain`; see `bfcnn/explain/__main__.py`."""
    from bfcnn.explain.__main__ import main as _main

    return _main(argv)


__all__ = [
    "EffectiveDimension",
    "NotBiasFreeError",
    "Reconstruction",
    "adaptive_filter",
    "adaptive_filters",
    "as_model_input",
    "crop_around",
    "effective_dimensionality",
    "effective_support",
    "filter_spread",
    "jacobian",
    "off_centre_limit",
    "reconstruction",
    "reconstruction_error",
    "require_bias_free",
    "sample_pixels",
]
