"""Bias-free residual denoiser: BF-DnCNN / ResNet (Mohan et al., ICLR 2020; Zhang et al., TIP 2017).

"Beyond a Gaussian denoiser: residual learning of deep CNN for image denoising"
(DnCNN) predicts the noise and subtracts it; Mohan et al. remove every bias so the
network is homogeneous. Here the body is a stack of bias-free residual blocks (identity
shortcuts, He et al., "Deep residual learning for image recognition", CVPR 2016).
"""

from typing import Any

import keras

from bfcnn.layers.arguments import check_int
from bfcnn.layers.bias_free import BiasFreeConvBlock, BiasFreeResidualBlock
from bfcnn.layers.shuffle import PixelShuffle, PixelUnshuffle
from bfcnn.models.common import (
    block_options,
    denoiser_head,
    image_input,
    non_local_block,
    scale_in,
    stochastic_depth_rates,
)


def build_resnet(
    channels: int = 1,
    filters: int = 64,
    kernel_size: int = 3,
    blocks: int = 8,
    batch_norm: bool = True,
    activation: str = "relu",
    predict: str = "noise",
    non_local_after: tuple = (),
    non_local_mode: str = "dot_product",
    gate: str = "none",
    scale_invariant_gates: bool = True,
    sparsity: float = 0.0,
    stochastic_depth: float = 0.0,
    kernel_regularizer: Any = None,
    downsample: int = 1,
    use_bias: bool = False,
    name: str = "resnet",
) -> keras.Model:
    """Builds a bias-free ResNet denoiser.

    Args:
        channels: 1 (gray) or 3 (RGB).
        filters: channels of every hidden layer.
        kernel_size: odd kernel size of every convolution.
        blocks: number of residual blocks (each two convolutions).
        batch_norm: BiasFreeBatchNorm inside the blocks (never right before the output: the
            head convolution reads the sum of the last block, not a normalization).
        activation: `relu`, `leaky_relu`, `prelu` or `linear`.
        predict: `noise` (output = input - network) or `image` (output = network).
        non_local_after: indices of residual blocks (0-based) followed by a NonLocalBlock.
        non_local_mode: `dot_product` or `embedded_gaussian`; either makes the model not
            homogeneous (the dot-product branch is of degree 3), see `bfcnn.layers.NonLocalBlock`.
        gate: `none`, `block` (a per-sample gate on each block's branch) or `squeeze_excite`
            (per-channel gates on each branch); see `bfcnn.layers.gates` and docs/options.md.
        scale_invariant_gates: gates read RMS-normalized features, which keeps the model
            homogeneous; False gives the plain sigmoid gates, which do not.
        sparsity: initial threshold of a learned soft threshold (relative to each channel's
            RMS) inside every block; 0 = none.
        stochastic_depth: drop rate of the deepest block's branch in training; block i of
            n drops with `stochastic_depth * (i + 1) / n` (Huang et al., ECCV 2016).
        kernel_regularizer: null, a name (`soft_orthogonal`, `soft_orthonormal`,
            `center_away`, `l1`, `l2`), a mapping `{type: ..., <argument>: ...}` or a list of
            them (summed), for every hidden convolution (stem and blocks, not the head); see
            `bfcnn.layers.regularizers.get`.
        downsample: 1, or a factor f: the blocks run on the f x f sub-images of a pixel
            unshuffle (FFDNet's reversible down-sampling, Zhang et al., IEEE TIP 2018), at
            1/f^2 of the pixels with f^2 times the channels in and out, so every layer costs
            f^2 fewer FLOPs per image pixel and the receptive field grows f times.
        use_bias: True builds the with-bias twin, a control for experiments.
        name: model name.

    Returns:
        A keras.Model, float32 [B, H, W, channels] 0-255 in and out.
    """
    options = block_options(gate, scale_invariant_gates, sparsity, kernel_regularizer)
    blocks = check_int("blocks", blocks, 0)
    rates = stochastic_depth_rates(stochastic_depth, blocks)
    downsample = check_int("downsample", downsample)
    inputs = image_input(channels)
    x = scale_in(inputs)
    if downsample > 1:
        x = PixelUnshuffle(downsample, name="unshuffle")(x)
    x = BiasFreeConvBlock(filters, kernel_size, batch_norm=False, activation=activation, use_bias=use_bias,
                          kernel_regularizer=options["kernel_regularizer"], name="stem")(x)
    non_local_after = set(int(i) for i in non_local_after)
    if not non_local_after <= set(range(blocks)):
        raise ValueError(f"non_local_after must be block indices within 0..{blocks - 1}, "
                         f"got {sorted(non_local_after)}")
    for i in range(blocks):
        x = BiasFreeResidualBlock(filters, kernel_size, batch_norm=batch_norm, activation=activation,
                                  use_bias=use_bias, stochastic_depth=rates[i], name=f"block{i}", **options)(x)
        if i in non_local_after:
            x = non_local_block(non_local_mode, use_bias, name=f"non_local{i}")(x)
    x = keras.layers.Conv2D(channels * downsample**2, kernel_size, padding="same", use_bias=use_bias,
                            kernel_initializer="he_normal", name="head")(x)
    if downsample > 1:
        x = PixelShuffle(downsample, name="shuffle")([x, inputs])
    outputs = denoiser_head(inputs, x, predict)
    return keras.Model(inputs, outputs, name=name)
