"""Stochastic depth (Huang, Sun, Liu, Sedra, Weinberger, "Deep networks with stochastic depth", ECCV 2016).

During training each sample drops a residual block's whole branch with probability
`rate` (the block is then the identity for that sample) and survivors are scaled by
`1 / (1 - rate)`, so the expected branch equals the inference one; in inference the layer
is the identity. A 0/1 factor per sample keeps the network homogeneous.
"""

import keras
from keras import ops

from bfcnn.layers.arguments import check_number


def linear_rates(rate: float, blocks: int) -> list:
    """Huang et al.'s linear decay: block `i` (0-based) of `blocks` drops with `rate * (i + 1) / blocks`."""
    return [rate * (i + 1) / blocks for i in range(blocks)]


@keras.saving.register_keras_serializable(package="bfcnn")
class StochasticDepth(keras.layers.Layer):
    """Drops a residual branch per sample in training: `branch * m / (1 - rate)`, `m ~ Bernoulli(1 - rate)`.

    Args:
        rate: drop probability in [0, 1).
        seed: seed of the layer's random generator (None: from Keras's global seed).

    Example:
        >>> y = x + StochasticDepth(0.1)(branch, training=True)
    """

    def __init__(self, rate=0.1, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = check_number("rate", rate, 0.0, 1.0)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="seed_generator")

    def call(self, inputs, training=False):
        if not training or self.rate == 0.0:
            return inputs
        keep = 1.0 - self.rate
        batch = ops.shape(inputs)[0]
        shape = (batch,) + (1,) * (len(inputs.shape) - 1)
        mask = ops.floor(keep + keras.random.uniform(shape, seed=self.seed_generator, dtype="float32"))
        return inputs * ops.cast(mask / keep, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config
