"""Bias-free building blocks (Mohan, Kadkhodaie, Simoncelli, Fernandez-Granda, ICLR 2020).

"Robust and interpretable blind image denoising via bias-free convolutional neural
networks": removing every additive constant (conv biases, the batch-norm mean and
beta) makes a ReLU network positively homogeneous, `f(a*x) = a*f(x)` for `a > 0`, so
the denoiser is locally a linear, per-pixel adaptive filter `f(y) = A(y) y` and it
generalizes to noise levels outside its training range.
"""

import keras
from keras import ops

from bfcnn.layers import regularizers
from bfcnn.layers.arguments import check_bool, check_choice, check_initializer, check_int, check_number
from bfcnn.layers.gates import BlockGate, SqueezeExcite
from bfcnn.layers.sparsity import SoftThreshold
from bfcnn.layers.stochastic_depth import StochasticDepth

ACTIVATIONS = ("relu", "leaky_relu", "prelu", "linear")
GATES = ("none", "block", "squeeze_excite")


def activation_layer(activation: str, **kwargs) -> keras.layers.Layer:
    """A positively homogeneous activation by name: ReLU, leaky ReLU, PReLU or the identity.

    `prelu` is a leaky ReLU whose negative slope is learned per channel (He, Zhang, Ren,
    Sun, "Delving deep into rectifiers", ICCV 2015; initial slope 0.25, shared over space):
    `max(x, 0) + alpha * min(x, 0)` is homogeneous for any alpha.
    """
    check_choice("activation", activation, ACTIVATIONS)
    if activation == "relu":
        return keras.layers.ReLU(**kwargs)
    if activation == "leaky_relu":
        return keras.layers.LeakyReLU(negative_slope=0.1, **kwargs)
    if activation == "prelu":
        return keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25), shared_axes=[1, 2],
                                  **kwargs)
    return keras.layers.Identity(**kwargs)


@keras.saving.register_keras_serializable(package="bfcnn")
class BiasFreeBatchNorm(keras.layers.Layer):
    """Batch normalization without the mean and without beta (Mohan et al., ICLR 2020).

    Training: `y * gamma / (std_batch + epsilon)`, with the per-channel standard deviation
    over batch and space. Inference: the moving standard deviation replaces the batch one,
    so the layer is a fixed per-channel scale and the network stays homogeneous.

    Args:
        momentum: decay of the moving standard deviation, in [0, 1).
        epsilon: added to the standard deviation, > 0.
        scale: learn the per-channel `gamma` (default True).
        gamma_initializer: initializer of `gamma`; `"zeros"` makes a residual branch
            start as the identity.

    Example:
        >>> y = BiasFreeBatchNorm()(keras.ops.ones((2, 8, 8, 4)), training=False)
    """

    def __init__(self, momentum=0.99, epsilon=1e-3, scale=True, gamma_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        self.momentum = check_number("momentum", momentum, 0.0, 1.0)
        self.epsilon = check_number("epsilon", epsilon, 0.0, strict=True)
        self.scale = check_bool("scale", scale)
        self.gamma_initializer = check_initializer("gamma_initializer", gamma_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("BiasFreeBatchNorm needs a known number of channels (last axis)")
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: channels})
        self.gamma = (
            self.add_weight(name="gamma", shape=(channels,), initializer=self.gamma_initializer)
            if self.scale
            else None
        )
        # Not autocast: under a mixed policy Keras would read it in bfloat16 inside `call`,
        # and a moving average updated from a value rounded to 8 bits stops short of the
        # batch statistic (its steps fall under the rounding); it is read in float32.
        self.moving_std = self.add_weight(
            name="moving_std", shape=(channels,), initializer="ones", trainable=False, autocast=False
        )

    def call(self, inputs, training=False):
        # Statistics in float32 whatever the compute dtype; gamma is read in the compute
        # dtype under a mixed policy, and cast back.
        x = ops.cast(inputs, "float32")
        moving_std = ops.cast(self.moving_std, "float32")
        if training:
            axes = list(range(len(inputs.shape) - 1))
            std = ops.sqrt(ops.var(x, axis=axes))
            self.moving_std.assign(self.momentum * moving_std + (1.0 - self.momentum) * ops.stop_gradient(std))
        else:
            std = moving_std
        factor = 1.0 / (std + self.epsilon)
        if self.gamma is not None:
            factor = factor * ops.cast(self.gamma, "float32")
        return ops.cast(x * factor, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            momentum=self.momentum,
            epsilon=self.epsilon,
            scale=self.scale,
            gamma_initializer=keras.initializers.serialize(self.gamma_initializer),
        )
        return config


def _normalization(batch_norm: bool, use_bias: bool, name: str, **kwargs):
    """BiasFreeBatchNorm, or the standard one (with mean and beta) for a with-bias twin."""
    if not batch_norm:
        return None
    if use_bias:
        return keras.layers.BatchNormalization(name=name, **kwargs)
    return BiasFreeBatchNorm(name=name, **kwargs)


@keras.saving.register_keras_serializable(package="bfcnn")
class BiasFreeConvBlock(keras.layers.Layer):
    """Convolution without bias, then optional BiasFreeBatchNorm, then a homogeneous activation.

    The building block of the bias-free networks of Mohan, Kadkhodaie, Simoncelli &
    Fernandez-Granda ("Robust and interpretable blind image denoising via bias-free
    convolutional neural networks", ICLR 2020): with no additive constant, `f(a*x) = a*f(x)`
    for a > 0 in inference mode (in training, batch norm's batch statistics make the block
    scale-invariant instead).

    Input [B, H, W, C_in], output [B, H, W, filters] ('same' padding).

    Args:
        filters: output channels.
        kernel_size: square kernel size; odd keeps the output centred on the input ('same'
            padding), an even one shifts it by half a pixel.
        batch_norm: add a BiasFreeBatchNorm after the convolution.
        activation: one of `relu`, `leaky_relu`, `prelu`, `linear`.
        use_bias: False (default) keeps the block bias-free; True makes the with-bias twin
            (conv bias and standard batch norm) used as a control in experiments.
        kernel_regularizer: optional Keras regularizer for the convolution kernel.
        gamma_initializer: initializer of the batch norm's scale; `"zeros"` makes the block
            start at zero (used for the last block of a residual branch).
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        batch_norm=False,
        activation="relu",
        use_bias=False,
        kernel_regularizer=None,
        gamma_initializer="ones",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_choice("activation", activation, ACTIVATIONS)
        self.filters = filters = check_int("filters", filters)
        self.kernel_size = kernel_size = check_int("kernel_size", kernel_size)
        self.batch_norm = check_bool("batch_norm", batch_norm)
        self.activation = activation
        self.use_bias = check_bool("use_bias", use_bias)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.conv = keras.layers.Conv2D(
            filters,
            kernel_size,
            padding="same",
            use_bias=self.use_bias,
            kernel_initializer="he_normal",
            kernel_regularizer=self.kernel_regularizer,
            dtype=self.dtype_policy,
            name="conv",
        )
        # checked even without batch norm
        self.gamma_initializer = check_initializer("gamma_initializer", gamma_initializer)
        self.norm = _normalization(self.batch_norm, self.use_bias, "norm", dtype=self.dtype_policy,
                                   gamma_initializer=self.gamma_initializer)
        self.act = activation_layer(activation, dtype=self.dtype_policy, name="act")

    def build(self, input_shape):
        self.conv.build(input_shape)
        out_shape = self.conv.compute_output_shape(input_shape)
        if self.norm is not None:
            self.norm.build(out_shape)
        self.act.build(out_shape)  # PReLU has weights

    def call(self, inputs, training=False):
        x = self.conv(inputs)
        if self.norm is not None:
            x = self.norm(x, training=training)
        return self.act(x)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            batch_norm=self.batch_norm,
            activation=self.activation,
            use_bias=self.use_bias,
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            gamma_initializer=keras.initializers.serialize(self.gamma_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="bfcnn")
class BiasFreeResidualBlock(keras.layers.Layer):
    """Residual block `x + BN(conv(act(BN(conv(x)))))` with no additive constant anywhere
    (BN only with `batch_norm`), the residual block of the bias-free networks of Mohan et
    al. (ICLR 2020). Input and output [B, H, W, filters].

    The second convolution is followed by BiasFreeBatchNorm when `batch_norm` is on;
    there is no activation after the sum, so the block is the identity plus a
    homogeneous branch: the residual block of He et al. (CVPR 2016) without the activation
    after the addition, as in EDSR (Lim et al., CVPRW 2017).

    Options (all off by default; each keeps the block bias-free and, with scale-invariant
    gates, positively homogeneous in inference mode; see docs/options.md):

    - `sparsity > 0`: a learned soft threshold relative to each channel's RMS after the
      first convolution (`bfcnn.layers.sparsity.SoftThreshold`).
    - `gate="squeeze_excite"`: squeeze-and-excitation on the branch output (Hu et al.,
      CVPR 2018); `gate="block"`: a per-sample scalar gate computed from the block input
      multiplies the branch (`bfcnn.layers.gates`).
    - `stochastic_depth > 0`: the branch is dropped per sample in training (Huang et al.,
      ECCV 2016).

    So the block computes `x + drop(g(x) * se(BN(conv(threshold(act(BN(conv(x))))))))`.

    Args:
        filters: channels in and out (the input must have this many).
        kernel_size: square kernel size; odd keeps the output centred on the input ('same'
            padding), an even one shifts it by half a pixel.
        batch_norm: BiasFreeBatchNorm after each convolution.
        activation: one of `relu`, `leaky_relu`, `prelu`, `linear`.
        use_bias: True makes the with-bias twin (see BiasFreeConvBlock); the gates stay
            without bias either way.
        kernel_regularizer: optional Keras regularizer for both kernels.
        gate: `none`, `block` or `squeeze_excite`.
        scale_invariant_gates: gates read RMS-normalized features (homogeneous); False is the
            plain sigmoid gate, which breaks homogeneity.
        sparsity: initial relative threshold of the soft threshold, >= 0 (0: no threshold).
        stochastic_depth: drop probability of the branch in training, in [0, 1).
        gate_reduction: the gates' hidden layer has `max(1, filters // gate_reduction)` units.
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        batch_norm=False,
        activation="relu",
        use_bias=False,
        kernel_regularizer=None,
        gate="none",
        scale_invariant_gates=True,
        sparsity=0.0,
        stochastic_depth=0.0,
        gate_reduction=4,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_choice("gate", gate, GATES)
        sparsity = check_number("sparsity", sparsity, 0.0)
        stochastic_depth = check_number("stochastic_depth", stochastic_depth, 0.0, 1.0)
        gate_reduction = check_int("gate_reduction", gate_reduction)
        common = dict(
            kernel_size=kernel_size,
            batch_norm=batch_norm,
            use_bias=use_bias,
            kernel_regularizer=kernel_regularizer,
            dtype=self.dtype_policy,
        )
        self.block1 = BiasFreeConvBlock(filters, activation=activation, name="block1", **common)
        # With batch norm, the branch's last scale starts at zero so the block starts as the
        # identity (Goyal et al., 2017): a unit-variance branch added to small image features
        # otherwise swamps them, and training a BN model then fails to get near the no-BN one.
        self.block2 = BiasFreeConvBlock(filters, activation="linear", name="block2", gamma_initializer="zeros",
                                        **common)
        # Optional parts exist only when switched on, so a default block has the same
        # weights and names as before the options existed (older .keras files load).
        gate_args = dict(reduction=gate_reduction, scale_invariant=scale_invariant_gates, dtype=self.dtype_policy)
        self.threshold = SoftThreshold(sparsity, dtype=self.dtype_policy, name="sparsity") if sparsity > 0 else None
        self.squeeze_excite = SqueezeExcite(name="squeeze_excite", **gate_args) if gate == "squeeze_excite" else None
        self.block_gate = BlockGate(name="block_gate", **gate_args) if gate == "block" else None
        self.drop = (StochasticDepth(stochastic_depth, dtype=self.dtype_policy, name="stochastic_depth")
                     if stochastic_depth > 0 else None)
        self.filters = self.block1.filters
        self.kernel_size = self.block1.kernel_size
        self.batch_norm = check_bool("batch_norm", batch_norm)
        self.activation = activation
        self.use_bias = check_bool("use_bias", use_bias)
        self.kernel_regularizer = self.block1.kernel_regularizer
        self.gate = gate
        self.scale_invariant_gates = check_bool("scale_invariant_gates", scale_invariant_gates)
        self.sparsity = float(sparsity)
        self.stochastic_depth = float(stochastic_depth)
        self.gate_reduction = gate_reduction

    def build(self, input_shape):
        if input_shape[-1] != self.filters:
            raise ValueError(
                f"BiasFreeResidualBlock has filters={self.filters} but its input has "
                f"{input_shape[-1]} channels; they must be equal"
            )
        self.block1.build(input_shape)
        self.block2.build(input_shape)
        for part in (self.threshold, self.squeeze_excite, self.block_gate, self.drop):
            if part is not None:
                part.build(input_shape)

    def call(self, inputs, training=False):
        branch = self.block1(inputs, training=training)
        if self.threshold is not None:
            branch = self.threshold(branch)
        branch = self.block2(branch, training=training)
        if self.squeeze_excite is not None:
            branch = self.squeeze_excite(branch)
        if self.block_gate is not None:
            branch = branch * ops.cast(self.block_gate(inputs), branch.dtype)
        if self.drop is not None:
            branch = self.drop(branch, training=training)
        return inputs + branch

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            batch_norm=self.batch_norm,
            activation=self.activation,
            use_bias=self.use_bias,
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            gate=self.gate,
            scale_invariant_gates=self.scale_invariant_gates,
            sparsity=self.sparsity,
            stochastic_depth=self.stochastic_depth,
            gate_reduction=self.gate_reduction,
        )
        return config
