"""Keras 3 layers for bias-free denoisers: building blocks, pyramids, N3 and non-local blocks."""

from bfcnn.layers.bias_free import (
    BiasFreeBatchNorm,
    BiasFreeConvBlock,
    BiasFreeResidualBlock,
)
from bfcnn.layers.pyramids import GaussianPyramid, LaplacianPyramid

__all__ = [
    "BiasFreeBatchNorm",
    "BiasFreeConvBlock",
    "BiasFreeResidualBlock",
    "GaussianPyramid",
    "LaplacianPyramid",
]
