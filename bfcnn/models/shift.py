"""The shift period of a denoiser: the image shifts that leave its output shifted alike.

A convolutional network without strides is shift-equivariant: denoising an image shifted by
one pixel gives the shifted result. Strides break that: a 2x2 pixel unshuffle (the `_s` ResNets)
sees a different grid of 2x2 blocks after a one-pixel shift, a 3-level pyramid a different
grid of 4x4 blocks, and the N3 block's patch grid (stride 5) another set of patches; measured on
the zoo's models, a one-pixel shift moves single output pixels by up to 8 (`resnet_gray_s`),
1.6 (`pyramid_gray_m`) and 12 (`n3net_gray`) levels away from the shifted whole-image result,
while a shift by the period moves nothing beyond float rounding (`tests/test_shift.py`).
Tiled inference starts its tiles at multiples of the period (`bfcnn.tiling.tile_spans`) so
that each tile computes what the whole image would.
"""

import math

import keras


def shift_period(model: keras.Model) -> int:
    """A shift, in pixels, by which the output of `model` moves with its input: the least common
    multiple of its sub-sampling factors (pixel unshuffles, strided convolutions, the mirroring of
    a multiscale model to a multiple of its levels) times that of its N3 blocks' patch strides.

    For the models `bfcnn.build_model` makes this is the period or a multiple of it (a multiple
    serves as well for tiling); 1 for a model without strides.
    """
    from bfcnn.layers.n3 import N3Block
    from bfcnn.layers.padding import ReflectToMultiple
    from bfcnn.layers.shuffle import PixelUnshuffle

    sampling, patches = 1, 1
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, (ReflectToMultiple, PixelUnshuffle)):
            sampling = math.lcm(sampling, int(layer.factor))
        elif isinstance(layer, keras.layers.Conv2D):
            for stride in layer.strides:
                sampling = math.lcm(sampling, int(stride))
        elif isinstance(layer, N3Block):
            patches = math.lcm(patches, int(layer.stride))
    return sampling * patches
