"""The full Jacobian A(y) of a denoiser on a small crop and its effective dimensionality (Mohan et al., ICLR 2020)."""

from dataclasses import dataclass
from typing import Optional

import numpy as np

from bfcnn.errors import BfcnnError
from bfcnn.explain.bias_free import check_linear
from bfcnn.explain.filters import check_batch_size, jacobian_rows
from bfcnn.explain.inputs import prepared

# The full Jacobian of an H x W x C crop has (H W C)^2 entries; above this many input
# values its SVD takes minutes, so `jacobian` refuses unless told otherwise.
MAX_JACOBIAN_INPUTS = 4096


@dataclass(frozen=True)
class EffectiveDimension:
    """The spectrum of `A(y)` on a crop and the dimension of the subspace it projects onto.

    Attributes:
        singular_values: all singular values of the (H W C) x (H W C) Jacobian, descending.
        dimension: `sum(singular_values ** 2)` = `||A||_F^2` = `trace(A A^T)`: the
            rank of A when A is an orthogonal projection, which Mohan et al. find A close to
            (singular values near 0 or 1, A nearly symmetric); the definition this module
            reports and plots.
        trace: `trace(A)`, the divergence of the denoiser (Stein's degrees of freedom);
            equals `dimension` for an orthogonal projection, so their gap measures how far
            A is from one.
        size: number of input values, H W C (the largest possible dimension).
    """

    singular_values: np.ndarray
    dimension: float
    trace: float
    size: int


def jacobian(model, image, allow_bias: bool = False, batch_size: Optional[int] = None,
             max_inputs: int = MAX_JACOBIAN_INPUTS) -> np.ndarray:
    """The full Jacobian A(y) of the model at a small image, [H W C, H W C].

    Row `i` is output value `i` (pixels in row-major order, channels last) as a function of
    the input values in the same order. The crop is the model's whole input, so its border
    is the image border.

    Raises:
        BfcnnError: the image has more than `max_inputs` values (the cost grows with the
            square); crop it or raise the limit.
    """
    model, y = prepared(model, image, allow_bias)
    height, width, channels = y.shape
    if height * width * channels > max_inputs:
        raise BfcnnError(
            f"a {height}x{width}x{channels} image has {height * width * channels} values, more than "
            f"max_inputs={max_inputs}; crop it (e.g. 24x24) or pass a larger max_inputs"
        )
    grid = np.stack(np.meshgrid(np.arange(height), np.arange(width), np.arange(channels), indexing="ij"), -1)
    targets = grid.reshape(-1, 3)
    rows = jacobian_rows(model, y, targets, check_batch_size(batch_size, y))
    if not allow_bias:
        check_linear(model, y, targets, rows)
    return rows.reshape(height * width * channels, -1)


def effective_dimensionality(model, image_crop, allow_bias: bool = False,
                             batch_size: Optional[int] = None,
                             max_inputs: int = MAX_JACOBIAN_INPUTS) -> EffectiveDimension:
    """Singular values of A(y) on a small crop and the effective dimension of its range.

    Mohan et al. (ICLR 2020) find A(y) nearly symmetric with singular values
    near 0 or 1: the network approximately projects the noisy image onto a subspace that
    adapts to the image, and the subspace shrinks as the noise grows. Its dimension is
    taken as `sum(s_i ** 2)` (the squared Frobenius norm of A, the rank of a projection);
    `trace(A)` is reported too. See `EffectiveDimension`.

    Args:
        model, allow_bias: as in `adaptive_filter`.
        image_crop: a small noisy image (at most `max_inputs` values, e.g. 24x24 gray).

    Example:
        >>> effective_dimensionality(model, noisy[:24, :24]).dimension
    """
    a = jacobian(model, image_crop, allow_bias=allow_bias, batch_size=batch_size, max_inputs=max_inputs)
    a = a.astype(np.float64)
    singular_values = np.linalg.svd(a, compute_uv=False)
    return EffectiveDimension(singular_values=singular_values, dimension=float(np.sum(singular_values**2)),
                              trace=float(np.trace(a)), size=int(a.shape[0]))
