"""Pieces every bfcnn model shares: the 0-255 input contract and the output head."""

from typing import Sequence, Union

import keras
from keras import ops

from bfcnn.errors import allowed, did_you_mean
from bfcnn.layers import regularizers
from bfcnn.layers.arguments import check_bool, check_int, check_number
from bfcnn.layers.bias_free import GATES
from bfcnn.layers.stochastic_depth import linear_rates

PREDICT = ("noise", "image")

# Annotation of multi-scale options given as one int for every level or a list, finest first.
PerLevel = Union[int, Sequence[int]]


def image_input(channels: int, guide_channels: int = 0) -> keras.KerasTensor:
    """The model input: float32 [B, H, W, channels + guide_channels] on the 0-255 scale, any H, W >= 1.

    The last `guide_channels` channels, if any, are a guide the model reads but does not denoise.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (gray) or 3 (RGB), got {channels!r}")
    guide_channels = check_int("guide_channels", guide_channels, 0)
    return keras.Input(shape=(None, None, channels + guide_channels), dtype="float32", name="image")


def scale_in(inputs):
    """Scales 0-255 to 0-1 by a multiplication only: no mean is subtracted (bias-free)."""
    return keras.layers.Rescaling(1.0 / 255.0, dtype="float32", name="scale_in")(inputs)


@keras.saving.register_keras_serializable(package="bfcnn")
class DenoiserOutput(keras.layers.Layer):
    """Turns the network's 0-1 output back into a 0-255 image, in float32.

    With `predict="noise"` the network estimates the noise, which is subtracted from the
    input (residual learning, Zhang et al. 2017); with `predict="image"` the network output
    is the image. Both are linear in (input, network), so homogeneity is kept.
    """

    def __init__(self, predict="noise", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if predict not in PREDICT:
            raise ValueError(f"predict={predict!r} is not supported; allowed: 'noise', 'image'")
        self.predict = predict

    def call(self, inputs):
        image, net = inputs
        net = ops.cast(net, "float32") * 255.0
        return image - net if self.predict == "noise" else net

    def compute_output_shape(self, input_shape):
        return input_shape[1]

    def get_config(self):
        return {**super().get_config(), "predict": self.predict}


def denoiser_head(inputs, net, predict: str):
    """The model output from the 0-255 input and the network's 0-1 estimate."""
    return DenoiserOutput(predict, name="output")([inputs, net])


def non_local_block(mode: str, use_bias: bool, name: str):
    """A NonLocalBlock for use inside a backbone (imported here so layers stay optional)."""
    from bfcnn.layers.non_local import NonLocalBlock

    return NonLocalBlock(mode=mode, bias_free=not use_bias, name=name)


def block_options(gate: str, scale_invariant_gates: bool, sparsity: float, kernel_regularizer) -> dict:
    """The residual-block options shared by every builder, checked, as BiasFreeResidualBlock keywords.

    `kernel_regularizer` is a config value and goes through `bfcnn.layers.regularizers.get`.

    Raises:
        ValueError: an unknown gate (with a close match) or regularizer, or a negative sparsity.
    """
    if gate not in GATES:
        raise ValueError(f"gate={gate!r} is not supported{did_you_mean(gate, GATES)}; allowed: {allowed(GATES)}")
    sparsity = check_number("sparsity", sparsity, 0.0, hint="initial threshold relative to the channel RMS")
    return dict(gate=gate, scale_invariant_gates=check_bool("scale_invariant_gates", scale_invariant_gates), sparsity=sparsity,
                kernel_regularizer=regularizers.get(kernel_regularizer))


def stochastic_depth_rates(rate: float, blocks: int) -> list:
    """Drop rates of a stack of `blocks` residual blocks: linear in depth up to `rate` (Huang et al., ECCV 2016).

    Raises:
        ValueError: `rate` outside [0, 1).
    """
    rate = check_number("stochastic_depth", rate, 0.0, 1.0, hint="drop rate of the deepest block")
    return linear_rates(rate, blocks)
