"""Keras 3 layers for bias-free denoisers: building blocks, block options, pyramids, N3 and non-local blocks,
and the opponent color transform that lets a gray network denoise color."""

from bfcnn.layers.bias_free import (
    BiasFreeBatchNorm,
    BiasFreeConvBlock,
    BiasFreeResidualBlock,
)
from bfcnn.layers.color import BatchToChannels, ChannelsToBatch, ChromaOffset, OpponentTransform
from bfcnn.layers.gates import BlockGate, SqueezeExcite
from bfcnn.layers.n3 import N3Block, N3Branch
from bfcnn.layers.non_local import NonLocalBlock
from bfcnn.layers.padding import ReflectToMultiple
from bfcnn.layers.pyramids import CropLike, GaussianPyramid, LaplacianPyramid, UpsampleLike
from bfcnn.layers.shuffle import PixelShuffle, PixelUnshuffle
from bfcnn.layers.regularizers import CenterAway, RegularizerSum, SoftOrthogonal, SoftOrthonormal
from bfcnn.layers.sparsity import SoftThreshold
from bfcnn.layers.stochastic_depth import StochasticDepth

__all__ = [
    "BatchToChannels",
    "BiasFreeBatchNorm",
    "BiasFreeConvBlock",
    "BiasFreeResidualBlock",
    "BlockGate",
    "CenterAway",
    "ChannelsToBatch",
    "ChromaOffset",
    "CropLike",
    "GaussianPyramid",
    "LaplacianPyramid",
    "N3Block",
    "N3Branch",
    "NonLocalBlock",
    "OpponentTransform",
    "PixelShuffle",
    "PixelUnshuffle",
    "ReflectToMultiple",
    "RegularizerSum",
    "SoftOrthogonal",
    "SoftOrthonormal",
    "SoftThreshold",
    "SqueezeExcite",
    "StochasticDepth",
    "UpsampleLike",
]
