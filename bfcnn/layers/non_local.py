"""The non-local block (Wang, Girshick, Gupta, He, "Non-local Neural Networks", CVPR 2018).

Every position attends to every (subsampled) position of the same image:
`y_i = sum_j f(x_i, x_j) g(x_j)`, with theta, phi and g 1x1 convolutions to C/2 channels,
and `z = W y + x` where W is a 1x1 convolution followed by a batch norm whose scale starts
at zero, so the block is exactly the identity when created.

Homogeneity (what a bias-free model needs, `f(a*x) = a*f(x)` for a > 0):

* `dot_product`: `f = theta(x)_i . phi(x)_j / N`. Without biases the branch `W y` is
  homogeneous of degree 3 (two factors in f, one in g; the 2x2 max-pool keeps degree 1),
  so `z(a*x) = a*x + a^3 * W y(x)`: the block, and a model containing it, is not degree-1
  homogeneous once its scale has left zero.
* `embedded_gaussian`: `f = softmax_j(theta_i . phi_j)`. Scaling x scales the logits by a^2,
  which changes how peaked the softmax is: no homogeneity of any degree.

Both modes therefore set `homogeneous = False` (read by `bfcnn.models.is_bias_free`).
Memory grows with the square of the number of pixels (N x N/4 attention), so the block
belongs at low resolution or on small images.
"""

import keras
from keras import ops

from bfcnn.layers.arguments import check_bool, check_choice, check_int
from bfcnn.layers.bias_free import BiasFreeBatchNorm

MODES = ("embedded_gaussian", "dot_product")


@keras.saving.register_keras_serializable(package="bfcnn")
class NonLocalBlock(keras.layers.Layer):
    """Non-local block, `z = x + BN(W y)` with `y = f(theta(x), phi(x)) g(x)` (Wang et al., CVPR 2018).

    Args:
        mode: `embedded_gaussian` (softmax of theta . phi) or `dot_product` (theta . phi
            divided by the number of keys).
        inter_channels: channels of theta, phi and g, >= 1; None means C // 2 (at least 1).
        subsample: 2x2 max-pool (stride 2, `same` padding) on phi and g, 4x fewer keys.
        bias_free: no biases, and a BiasFreeBatchNorm after W; False gives the
            convolutions biases and uses the standard BatchNormalization.
        return_attention: `call` returns `(z, attention)`, attention [B, H*W, keys]; the
            method `attention(x)` gives the same map without changing the layer's outputs.

    Example:
        >>> z = NonLocalBlock(mode="dot_product")(keras.ops.ones((1, 16, 16, 32)))
    """

    def __init__(
        self,
        mode="embedded_gaussian",
        inter_channels=None,
        subsample=True,
        bias_free=True,
        return_attention=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_choice("mode", mode, MODES)
        self.mode = mode
        self.inter_channels = None if inter_channels is None else check_int(
            "inter_channels", inter_channels, hint="or None for half the input channels")
        self.subsample = check_bool("subsample", subsample)
        self.bias_free = check_bool("bias_free", bias_free)
        self.return_attention = check_bool("return_attention", return_attention)
        self.homogeneous = False

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("NonLocalBlock needs a known number of channels (last axis)")
        inner = self.inter_channels or max(channels // 2, 1)

        def conv(filters, name):
            return keras.layers.Conv2D(filters, 1, use_bias=not self.bias_free,
                                       kernel_initializer="he_normal", dtype=self.dtype_policy, name=name)

        self.theta, self.phi, self.g = conv(inner, "theta"), conv(inner, "phi"), conv(inner, "g")
        self.w = conv(channels, "w")
        if self.bias_free:
            self.norm = BiasFreeBatchNorm(gamma_initializer="zeros", dtype=self.dtype_policy, name="norm")
        else:
            self.norm = keras.layers.BatchNormalization(gamma_initializer="zeros", dtype=self.dtype_policy,
                                                        name="norm")
        for layer in (self.theta, self.phi, self.g):
            layer.build(input_shape)
        inner_shape = (*input_shape[:-1], inner)
        self.w.build(inner_shape)
        self.norm.build(input_shape)

    def _attend(self, inputs):
        """The attention [B, H*W, keys] (float32) and the values g [B, keys, inner]."""
        shape = ops.shape(inputs)
        batch = shape[0]
        theta, phi, g = self.theta(inputs), self.phi(inputs), self.g(inputs)
        if self.subsample:
            phi = ops.max_pool(phi, pool_size=2, strides=2, padding="same")
            g = ops.max_pool(g, pool_size=2, strides=2, padding="same")
        inner = theta.shape[-1]
        theta = ops.cast(ops.reshape(theta, (batch, -1, inner)), "float32")
        phi = ops.cast(ops.reshape(phi, (batch, -1, inner)), "float32")
        g = ops.cast(ops.reshape(g, (batch, -1, inner)), "float32")
        logits = ops.matmul(theta, ops.transpose(phi, (0, 2, 1)))
        if self.mode == "embedded_gaussian":
            # Written out rather than ops.softmax, which warns on one key (a 1x1 image).
            attention = ops.exp(logits - ops.max(logits, axis=-1, keepdims=True))
            attention = attention / ops.sum(attention, axis=-1, keepdims=True)
        else:
            attention = logits / ops.cast(ops.shape(phi)[1], "float32")
        return attention, g

    def key_grid_shape(self, height, width):
        """(rows, columns) of the key grid for an H x W input: halved, rounded up, when subsampled."""
        if self.subsample:
            return (height + 1) // 2, (width + 1) // 2
        return height, width

    def attention(self, inputs, spatial=False):
        """Where every position looks: the weights f(x_i, x_j) of `y_i = sum_j f(x_i, x_j) g(x_j)`.

        Args:
            inputs: the block's input [B, H, W, C] (builds the block if needed).
            spatial: False returns [B, H*W, keys] (queries and keys in row-major order);
                True returns [B, H, W, H_k, W_k], the key grid being `key_grid_shape(H, W)`.

        Returns:
            float32 weights. Each query's row sums to 1 for `embedded_gaussian` (a softmax);
            for `dot_product` the rows are `theta_i . phi_j / keys` and may be negative.

        Example:
            >>> a = block.attention(features, spatial=True)[0, row, col]   # [H_k, W_k]
        """
        inputs = ops.convert_to_tensor(inputs)
        if not self.built:
            self.build(tuple(inputs.shape))
        attention, _ = self._attend(inputs)
        if not spatial:
            return attention
        height, width = ops.shape(inputs)[1:3]  # ints where known, tensors in a graph with None sizes
        return ops.reshape(attention, (-1, height, width, *self.key_grid_shape(height, width)))

    def call(self, inputs, training=False):
        shape = ops.shape(inputs)
        batch, height, width = shape[0], shape[1], shape[2]
        attention, g = self._attend(inputs)
        inner = g.shape[-1]
        y = ops.reshape(ops.matmul(attention, g), (batch, height, width, inner))
        y = ops.cast(y, self.compute_dtype)
        z = inputs + ops.cast(self.norm(self.w(y), training=training), inputs.dtype)
        return (z, attention) if self.return_attention else z

    def compute_output_shape(self, input_shape):
        if not self.return_attention:
            return input_shape
        return input_shape, (input_shape[0], None, None)

    def compute_output_spec(self, inputs, training=False):
        # Said outright: Keras would give the attention the compute dtype (bfloat16 under a
        # mixed policy), while `_attend` computes it in float32.
        output = keras.KerasTensor(inputs.shape, dtype=inputs.dtype)
        if not self.return_attention:
            return output
        return output, keras.KerasTensor((inputs.shape[0], None, None), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            mode=self.mode,
            inter_channels=self.inter_channels,
            subsample=self.subsample,
            bias_free=self.bias_free,
            return_attention=self.return_attention,
        )
        return config
