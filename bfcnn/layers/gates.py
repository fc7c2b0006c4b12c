"""Gates for bias-free residual blocks: squeeze-and-excitation and a per-block on/off gate.

`SqueezeExcite` (Hu, Shen, Sun, "Squeeze-and-excitation networks", CVPR 2018) scales
each channel by a sigmoid gate computed from the globally pooled features. `BlockGate`
computes one scalar per sample and block, a soft version of the per-input block gates of
Veit & Belongie ("Convolutional networks with adaptive inference graphs", ECCV 2018), that
multiplies the block's residual branch.

A sigmoid of features breaks homogeneity: `gate(a*x) != gate(x)`. With
`scale_invariant=True` (the default) the gates read the pooled features divided by the
per-sample root mean square of the features, so `gate(a*x) = gate(x)` for `a > 0` and a
bias-free network with gates stays homogeneous, `f(a*x) = a*f(x)`. The dense layers of
the gates have no bias either.
"""

import keras
from keras import ops

from bfcnn.layers.arguments import check_bool, check_int, check_number


def pooled_descriptor(inputs, scale_invariant: bool = True, epsilon: float = 1e-12):
    """The per-channel spatial mean `[B, C]`, in float32; divided by the per-sample RMS when scale invariant.

    The RMS is over height, width and channels: `sqrt(mean(x^2) + epsilon)`, so the result
    is unchanged when `x` is multiplied by any `a > 0` (up to `epsilon`, which only keeps an
    all-zero input finite).
    """
    x = ops.cast(inputs, "float32")
    pooled = ops.mean(x, axis=(1, 2))
    if scale_invariant:
        rms = ops.sqrt(ops.mean(ops.square(x), axis=(1, 2, 3)) + epsilon)
        pooled = pooled / rms[:, None]
    return pooled


class _Gate(keras.layers.Layer):
    """Shared arguments and checks of the gates."""

    def __init__(self, reduction=4, scale_invariant=True, epsilon=1e-12, **kwargs):
        super().__init__(**kwargs)
        self.reduction = check_int("reduction", reduction)
        self.scale_invariant = check_bool("scale_invariant", scale_invariant)
        self.epsilon = check_number("epsilon", epsilon, 0.0, strict=True)
        self.input_spec = keras.InputSpec(ndim=4)  # [B, H, W, C]

    @property
    def homogeneous(self) -> bool:
        """Whether the gated output is positively homogeneous (read by `bfcnn.models.cost.is_bias_free`)."""
        return self.scale_invariant

    def _channels(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"{type(self).__name__} needs a known number of channels (last axis)")
        self.input_spec = keras.InputSpec(ndim=4, axes={-1: channels})
        return channels

    def _dense(self, units, name, activation=None):
        # The gate runs in float32 whatever the policy: the RMS division is what makes it scale invariant.
        return keras.layers.Dense(units, activation=activation, use_bias=False, dtype="float32", name=name)

    def get_config(self):
        config = super().get_config()
        config.update(reduction=self.reduction, scale_invariant=self.scale_invariant, epsilon=self.epsilon)
        return config


@keras.saving.register_keras_serializable(package="bfcnn")
class SqueezeExcite(_Gate):
    """Squeeze-and-excitation (Hu et al., CVPR 2018): `x * sigmoid(W2 relu(W1 pool(x)))` per channel.

    Args:
        reduction: the hidden layer has `max(1, channels // reduction)` units.
        scale_invariant: pool the features divided by their per-sample RMS, so the gate
            ignores the input's scale and the layer is positively homogeneous (default).
            False is the original gate, which breaks homogeneity (the layer then reports
            `homogeneous = False`).
        epsilon: added to the mean square before the square root, > 0.

    Example:
        >>> y = SqueezeExcite()(keras.ops.ones((2, 8, 8, 16)))
    """

    def build(self, input_shape):
        channels = self._channels(input_shape)
        self.squeeze = self._dense(max(1, channels // self.reduction), "squeeze", activation="relu")
        self.excite = self._dense(channels, "excite")
        self.squeeze.build((input_shape[0], channels))
        self.excite.build((input_shape[0], self.squeeze.units))

    def gate(self, inputs):
        """The per-channel gate `[B, 1, 1, C]` in (0, 1), float32."""
        descriptor = pooled_descriptor(inputs, self.scale_invariant, self.epsilon)
        return ops.sigmoid(self.excite(self.squeeze(descriptor)))[:, None, None, :]

    def call(self, inputs):
        return inputs * ops.cast(self.gate(inputs), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="bfcnn")
class BlockGate(_Gate):
    """A per-sample scalar gate in (0, 1) computed from a block's input, for its residual branch.

    `gate(x) = sigmoid(w2 . relu(W1 pool(x)))`; the residual block returns
    `x + gate(x) * branch(x)`, so a sample can switch a block (nearly) off.

    Args:
        reduction: the hidden layer has `max(1, channels // reduction)` units.
        scale_invariant: see `SqueezeExcite`; True keeps the block homogeneous.
        epsilon: added to the mean square before the square root, > 0.

    Returns (call):
        The gate, float32 `[B, 1, 1, 1]`.
    """

    def build(self, input_shape):
        channels = self._channels(input_shape)
        self.hidden = self._dense(max(1, channels // self.reduction), "hidden", activation="relu")
        self.logit = self._dense(1, "logit")
        self.hidden.build((input_shape[0], channels))
        self.logit.build((input_shape[0], self.hidden.units))

    def call(self, inputs):
        descriptor = pooled_descriptor(inputs, self.scale_invariant, self.epsilon)
        return ops.sigmoid(self.logit(self.hidden(descriptor)))[:, None, None, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 1, 1, 1)
