"""A learned soft threshold relative to each channel's own scale: sparse features that stay homogeneous.

Soft thresholding `sign(x) * max(|x| - t, 0)` is the classic shrinkage denoiser (Donoho,
"De-noising by soft-thresholding", IEEE Trans. Inf. Theory 1995). Inside a network a fixed
`t` is an additive constant and breaks `f(a*x) = a*f(x)`; a threshold proportional to a
per-sample statistic of the features keeps it, as in the channel-wise thresholds of deep
residual shrinkage networks (Zhao, Zhong, Fu, Tang, Pecht, IEEE Trans. Ind. Informatics 2020),
which scale a learned factor by each channel's mean absolute value.
"""

import keras
from keras import ops

from bfcnn.layers.arguments import check_number


@keras.saving.register_keras_serializable(package="bfcnn")
class SoftThreshold(keras.layers.Layer):
    """`y = sign(x) * relu(|x| - t_c * s_c(x))`, with `s_c(x)` the spatial RMS of channel c of each sample.

    Input `[B, ..., C]` with at least one spatial axis (`[B, H, W, C]` in the models; `[B, N, C]`
    works too): the RMS is over every axis but the batch and the channels.

    `t_c >= 0` is learned per channel (clipped at 0 in the forward pass and kept non-negative
    by a constraint). Because `s_c(a*x) = a * s_c(x)`, the layer is positively homogeneous.
    With `t_c = 0` it is the identity.

    Args:
        threshold: initial value of every `t_c`, >= 0 (a fraction of the channel's RMS).
        epsilon: added to the mean square before the square root, > 0 (keeps zero input finite).

    Example:
        >>> y = SoftThreshold(0.25)(keras.ops.ones((2, 8, 8, 16)))
    """

    def __init__(self, threshold=0.1, epsilon=1e-12, **kwargs):
        super().__init__(**kwargs)
        self.threshold = check_number("threshold", threshold, 0.0)
        self.epsilon = check_number("epsilon", epsilon, 0.0, strict=True)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("SoftThreshold needs a known number of channels (last axis)")
        if len(input_shape) < 3:
            raise ValueError(f"SoftThreshold needs input [B, ..., C] with spatial axes (e.g. [B, H, W, C]) to take "
                             f"each channel's RMS over, got shape {tuple(input_shape)}")
        self.input_spec = keras.InputSpec(min_ndim=3, axes={-1: channels})
        self.thresholds = self.add_weight(
            name="threshold",
            shape=(channels,),
            initializer=keras.initializers.Constant(self.threshold),
            constraint=keras.constraints.NonNeg(),
        )

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        spatial = tuple(range(1, len(x.shape) - 1))
        scale = ops.sqrt(ops.mean(ops.square(x), axis=spatial, keepdims=True) + self.epsilon)
        t = ops.maximum(ops.cast(self.thresholds, "float32"), 0.0)
        y = ops.sign(x) * ops.relu(ops.abs(x) - t * scale)
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(threshold=self.threshold, epsilon=self.epsilon)
        return config
