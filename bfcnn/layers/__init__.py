"""Keras 3 layers for bias-free denoisers: building blocks, pyramids, N3 and non-local blocks."""

from bfcnn.layers.bias_free import (
    BiasFreeBatchNorm,
    BiasFreeConvBlock,
    BiasFreeResidualBlock,
)
from bfcnn.layers.n3 import N3Block
from bfcnn.layers.non_local import NonLocalBlock
from bfcnn.layers.pyramids import CropLike, GaussianPyramid, LaplacianPyramid, UpsampleLike

__all__ = [
    "BiasFreeBatchNorm",
    "BiasFreeConvBlock",
    "BiasFreeResidualBlock",
    "CropLike",
    "GaussianPyramid",
    "LaplacianPyramid",
    "N3Block",
    "NonLocalBlock",
    "UpsampleLike",
]
