"""One-number measures of an adaptive filter's size, and the colour range it is drawn with (Mohan et al., ICLR 2020)."""

import numpy as np

from bfcnn.errors import BfcnnError
from bfcnn.explain.inputs import check_pixel


def filter_spread(weights: np.ndarray, pixel) -> float:
    """The RMS distance in pixels from `pixel` of a filter's weight, `sqrt(sum w^2 d^2 / sum w^2)`.

    A one-number width of an adaptive filter: it grows as the filter averages over a
    larger neighbourhood (as the noise grows, Mohan et al., ICLR 2020).
    """
    w = np.asarray(weights, np.float64)
    if w.ndim == 3:
        w = np.sqrt(np.sum(w**2, axis=-1))
    if w.ndim != 2:
        raise BfcnnError(f"weights must be [H, W] or [H, W, C], got shape {np.shape(weights)}")
    row, col = check_pixel(pixel, *w.shape)
    rr, cc = np.meshgrid(np.arange(w.shape[0]) - row, np.arange(w.shape[1]) - col, indexing="ij")
    energy = w**2
    total = energy.sum()
    return float(np.sqrt(np.sum(energy * (rr**2 + cc**2)) / total)) if total > 0 else 0.0


def effective_support(weights: np.ndarray) -> float:
    """How many pixels a filter averages over: `(sum |w|)^2 / sum w^2`.

    1 for a single nonzero weight, n for n equal weights; unlike `filter_spread` it does not
    depend on where the weights are, only on how evenly they are spread.
    """
    w = np.abs(np.asarray(weights, np.float64))
    energy = np.sum(w**2)
    return float(np.sum(w) ** 2 / energy) if energy > 0 else 0.0


def off_centre_limit(weights: np.ndarray, position) -> float:
    """The largest |weight| of a 2-D map leaving out `position`: a color range that shows the
    surround (the centre weight, usually the largest, is then drawn saturated)."""
    w = np.abs(np.asarray(weights, np.float64)).copy()
    if w.ndim != 2:
        raise BfcnnError(f"weights must be a 2-D map, got shape {w.shape}")
    w[check_pixel(position, *w.shape)] = 0.0
    return float(w.max()) if w.max() > 0 else float(np.max(np.abs(weights)) or 1.0)
