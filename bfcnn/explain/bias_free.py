"""Whether a model is bias-free: by its layers, and numerically by `f(y) = A(y) y` (Mohan et al., ICLR 2020)."""

from typing import Optional

import numpy as np

from bfcnn.errors import BfcnnError

# |f(y) - A(y) y| allowed at a pixel of a model taken for bias-free, on the 0-255 scale (plus
# 1e-4 of |f(y)|): float32 rounding gives up to about 2e-3 on the zoo's models (1e-6 to 8e-4
# on the gray ones at sigma 0 to 100); an offset of half a gray level in one layer gives 0.5.
LINEARITY_TOLERANCE = 0.01


class NotBiasFreeError(BfcnnError):
    """The model has additive constants (or non-homogeneous layers): `f(y) = A(y) y` fails."""


def why_not_bias_free(model) -> Optional[str]:
    """None for a bias-free model (`bfcnn.models.is_bias_free`), else what breaks it."""
    from bfcnn.models.cost import why_not_bias_free as _why

    return _why(model)


def require_bias_free(model, allow_bias: bool = False) -> None:
    """Raises NotBiasFreeError unless the model is bias-free or `allow_bias` is True."""
    if allow_bias:
        return
    reason = why_not_bias_free(model)
    if reason is not None:
        raise NotBiasFreeError(
            f"model {getattr(model, 'name', '?')!r} is not bias-free: {reason}. Its Jacobian rows "
            "are not the whole filter (f(y) = A(y) y + b(y)); pass allow_bias=True (--allow-bias on the command "
            "line) to explain it anyway"
        )


def output_and_reconstruction(model, y: np.ndarray, targets: np.ndarray, rows: np.ndarray):
    """`f(y)` and `A(y) y` at `targets` [P, 3], in float64."""
    import tensorflow as tf

    output = tf.cast(model(tf.constant(y[None]), training=False), tf.float32).numpy()[0]
    f = output[targets[:, 0], targets[:, 1], targets[:, 2]].astype(np.float64)
    return f, np.einsum("phwc,hwc->p", rows.astype(np.float64), y.astype(np.float64))


def check_linear(model, y: np.ndarray, targets: np.ndarray, rows: np.ndarray) -> None:
    """NotBiasFreeError when `f(y) = A(y) y` fails at the targets: a constant the layer check
    (`why_not_bias_free`, which reads weight names and layer types) cannot see, such as a
    Rescaling offset, a Normalization layer or a Lambda adding a number."""
    f, ay = output_and_reconstruction(model, y, targets, rows)
    excess = np.abs(f - ay) - 1e-4 * np.abs(f)
    worst = int(np.argmax(excess))
    if excess[worst] > LINEARITY_TOLERANCE:
        row, col, channel = (int(v) for v in targets[worst])
        raise NotBiasFreeError(
            f"model {getattr(model, 'name', '?')!r} is not bias-free at this image: at pixel ({row}, {col}) "
            f"channel {channel} its output is {f[worst]:.4g} but A(y) y is {ay[worst]:.4g}, so some layer adds "
            "a constant or is not homogeneous; pass allow_bias=True (--allow-bias) to explain it anyway")
