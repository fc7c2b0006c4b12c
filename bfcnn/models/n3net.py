"""N3Net: DnCNN stages interleaved with N3 blocks (Ploetz & Roth, "Neural Nearest Neighbors Networks", NeurIPS 2018).

Each stage is a bias-free DnCNN (Zhang et al., TIP 2017) that predicts a residual added
to its input estimate; between two stages an N3 block (`bfcnn.layers.n3.N3Block`) appends
k non-locally averaged versions of the current estimate, so the next stage can use
self-similarity across the image. The paper's denoiser: 3 stages of depth 6 with 64
features, k = 7, 8 embedding channels, 10 x 10 patches at stride 5, 15 x 15 windows.
"""

import keras

from bfcnn.layers.arguments import check_int
from bfcnn.layers.bias_free import BiasFreeConvBlock
from bfcnn.layers.n3 import N3Block
from bfcnn.models.common import denoiser_head, image_input, scale_in


def build_n3net(
    channels: int = 1,
    stages: int = 3,
    depth: int = 6,
    filters: int = 64,
    k: int = 7,
    embedding_channels: int = 8,
    patch_size: int = 10,
    stride: int = 5,
    window: int = 15,
    batch_norm: bool = True,
    scale_equivariant: bool = False,
    use_bias: bool = False,
    embedding_depth: int = 3,
    embedding_filters: int = 64,
    name: str = "n3net",
) -> keras.Model:
    """Builds an N3Net denoiser.

    Args:
        channels: 1 (gray) or 3 (RGB).
        stages: DnCNN stages, >= 1; an N3 block sits between each two (stages - 1 blocks).
        depth: convolutions per stage, >= 1 (first conv-ReLU, then conv-BN-ReLU, last linear).
        filters: channels of the hidden layers of the stages.
        k: neighbour images of each N3 block; a later stage sees channels * (k + 1) inputs.
        embedding_channels: channels of the N3 blocks' patch embedding.
        patch_size, stride, window: N3 patches (p x p at stride s, p a multiple of s) and
            candidate window (in patches).
        batch_norm: BiasFreeBatchNorm in the hidden layers.
        scale_equivariant: N3 blocks with a temperature that scales with the image, which
            keeps a bias-free N3Net homogeneous, `f(a*x) = a*f(x)`; with False (the paper)
            the learned temperature makes the model only approximately so.
        use_bias: True builds the with-bias twin, a control for experiments.
        embedding_depth, embedding_filters: the N3 blocks' embedding and temperature CNNs.
        name: model name.

    Returns:
        A keras.Model, float32 [B, H, W, channels] on the 0-255 scale in and out, any H, W >= 1.

    Raises:
        ValueError: an argument out of range, naming it.

    Example:
        >>> model = build_n3net(channels=1)
        >>> model(np.zeros((1, 64, 64, 1), "float32")).shape
        TensorShape([1, 64, 64, 1])
    """
    stages, depth, filters = check_int("stages", stages), check_int("depth", depth), check_int("filters", filters)
    inputs = image_input(channels)
    estimate = scale_in(inputs)
    features = estimate
    for stage in range(stages):
        x = features
        for layer in range(depth):
            last = layer == depth - 1
            x = BiasFreeConvBlock(
                channels if last else filters,
                3,
                batch_norm=batch_norm and 0 < layer < depth - 1,
                activation="linear" if last else "relu",
                use_bias=use_bias,
                name=f"stage{stage}_conv{layer}",
            )(x)
        estimate = keras.layers.Add(name=f"stage{stage}_residual")([estimate, x])
        if stage < stages - 1:
            features = N3Block(
                k=k,
                embedding_channels=embedding_channels,
                patch_size=patch_size,
                stride=stride,
                window=window,
                embedding_depth=embedding_depth,
                embedding_filters=embedding_filters,
                batch_norm=batch_norm,
                scale_equivariant=scale_equivariant,
                use_bias=use_bias,
                name=f"n3_{stage}",
            )(estimate)
    outputs = denoiser_head(inputs, estimate, "image")
    return keras.Model(inputs, outputs, name=name)
