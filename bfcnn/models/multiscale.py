"""Multi-scale bias-free denoiser on a Laplacian or Gaussian pyramid.

A small network per pyramid level, run coarse to fine (Burt & Adelson 1983 for the
pyramid; the coarse-to-fine residual scheme follows LapSRN, Lai et al., CVPR 2017, and
the original bfcnn's multi-scale models). Each level sees its noisy band plus the
denoised coarser result (and, optionally, the coarser level's features), so 3x3
convolutions at level i cover 2^i times more image: a large receptive field for a
small cost in FLOPs and memory, which suits phones and CPU training.
"""

import inspect
from typing import Any, Optional

import keras
import numpy as np
from keras import ops

from bfcnn.layers.arguments import check_int
from bfcnn.layers.bias_free import BiasFreeConvBlock, BiasFreeResidualBlock
from bfcnn.layers.n3 import N3Branch
from bfcnn.layers.padding import ReflectToMultiple
from bfcnn.layers.pyramids import CropLike, GaussianPyramid, LaplacianPyramid, UpsampleLike
from bfcnn.layers.shuffle import PixelShuffle
from bfcnn.models.common import (
    PREDICT,
    PerLevel,
    block_options,
    denoiser_head,
    image_input,
    non_local_block,
    scale_in,
    stochastic_depth_rates,
)

PYRAMIDS = ("laplacian", "gaussian")


def _per_level(name, value, levels):
    """An int applies to every level; a list must give one value per level (finest first)."""
    values = [value] * levels if isinstance(value, int) else list(value)
    if len(values) != levels or not all(isinstance(v, int) and v >= 0 for v in values):
        raise ValueError(f"{name} must be an int or a list of {levels} ints (one per level), got {value!r}")
    return values


def _encoder_blocks(encoder_blocks, levels: int, shared: bool) -> list:
    """Encoder blocks per level, checked: none with `shared`, none at the coarsest level."""
    level_encoder = _per_level("encoder_blocks", encoder_blocks, levels)
    if shared and any(level_encoder):
        raise ValueError("encoder_blocks needs shared=False (one backbone per level)")
    if any(level_encoder) and levels == 1:
        raise ValueError("encoder_blocks needs levels >= 2 (the coarsest level has no encoder blocks)")
    if not isinstance(encoder_blocks, int) and level_encoder[-1]:
        raise ValueError(f"encoder_blocks[{levels - 1}] must be 0: the coarsest level has no encoder blocks (its "
                         f"backbone is the bottom of the U), got {list(encoder_blocks)}")
    return level_encoder


def _extra_block_levels(non_local_levels, n3_levels, level_blocks: list, shared: bool):
    """The levels with a non-local block and those with an N3 branch, as sets, checked."""
    levels = len(level_blocks)
    non_local_levels = set(int(i) for i in non_local_levels)
    if not non_local_levels <= set(range(levels)):
        raise ValueError(f"non_local_levels must be within 0..{levels - 1}, got {sorted(non_local_levels)}")
    n3_levels = set(int(i) for i in n3_levels)
    if not n3_levels <= set(range(levels)):
        raise ValueError(f"n3_levels must be within 0..{levels - 1}, got {sorted(n3_levels)}")
    if n3_levels and shared:
        raise ValueError("n3_levels needs shared=False (one backbone per level)")
    if non_local_levels and shared:
        raise ValueError("non_local_levels needs shared=False (one backbone per level)")
    empty = sorted(level for level in non_local_levels | n3_levels if level_blocks[level] == 0)
    if empty:  # the block goes after a level's first residual block
        raise ValueError(f"non_local_levels / n3_levels name level(s) {empty}, which have blocks=0; a non-local or "
                         "N3 block goes after a level's first residual block")
    return non_local_levels, n3_levels


def _check_n3(n3) -> None:
    """`n3`: None or a mapping of `N3Branch` arguments, each value checked as n3.<key>."""
    if n3 is not None and not isinstance(n3, dict):
        raise ValueError(f"n3 must be a mapping of N3Branch arguments or None, got {n3!r}")
    n3_keys = [k for k in inspect.signature(N3Branch.__init__).parameters if k not in ("self", "filters", "use_bias",
                                                                                         "kwargs")]
    unknown = sorted(set(n3 or {}) - set(n3_keys))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(map(repr, unknown))} in n3; allowed: {', '.join(n3_keys)}")
    if n3:
        try:  # checked whether or not a level uses it
            N3Branch(8, **n3)
        except ValueError as error:
            raise ValueError(f"n3.{error}") from None


class _Level:
    """The layers of one level's backbone (shared between levels when `shared=True`)."""

    def __init__(self, tag, *, channels, filters, blocks, kernel_size, batch_norm, activation, use_bias,
                 non_local, non_local_mode, options, stochastic_depth, n3=None):
        common = dict(kernel_size=kernel_size, activation=activation, use_bias=use_bias)
        self.regularizer = options["kernel_regularizer"]
        self.stem = BiasFreeConvBlock(filters, batch_norm=False, kernel_regularizer=self.regularizer,
                                      name=f"{tag}_stem", **common)
        self.lift = None
        rates = stochastic_depth_rates(stochastic_depth, blocks)
        self.blocks = [
            BiasFreeResidualBlock(filters, batch_norm=batch_norm, stochastic_depth=rates[i], name=f"{tag}_block{i}",
                                  **common, **options)
            for i in range(blocks)
        ]
        self.non_local = non_local_block(non_local_mode, use_bias, f"{tag}_non_local") if non_local else None
        self.n3 = None if n3 is None else N3Branch(filters, use_bias=use_bias, name=f"{tag}_n3", **n3)
        self.head = keras.layers.Conv2D(channels, kernel_size, padding="same", use_bias=use_bias,
                                        kernel_initializer="he_normal", name=f"{tag}_head")
        self.tag = tag
        self.filters = filters
        self.use_bias = use_bias

    def __call__(self, band, context, features, skip=None, level=0, guide=None):
        """(features, head output) of the level: its band and the upsampled coarser result
        (`context`), plus the coarser level's `features` (lifted, created on first use), the
        encoder's `skip` and a `guide` band when given; `level` names the lift's shuffle."""
        h = self.stem(keras.layers.Concatenate()([band, context] + ([] if guide is None else [guide])))
        if skip is not None:
            h = h + skip
        if features is not None:
            # The coarser features are carried up (U-Net style) by a learned 2x2 stride-2
            # transposed convolution, written as a 1x1 convolution to 4x the channels and a
            # depth-to-space: the same map (`lift_kernel_from_transposed`), in TFLite builtins
            # whose shapes follow from the input's (TRANSPOSE_CONV takes a computed output shape).
            if self.lift is None:
                self.lift = keras.layers.Conv2D(4 * self.filters, 1, use_bias=self.use_bias,
                                                kernel_initializer="he_normal",
                                                kernel_regularizer=self.regularizer, name=f"{self.tag}_lift")
            # `features` is exactly half of `h` (the model mirrors its input to a multiple): no crop
            h = h + PixelShuffle(2, crop=False, name=f"level{level}_lift_shuffle")([self.lift(features), h])
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i == 0 and self.non_local is not None:
                h = self.non_local(h)
            if i == 0 and self.n3 is not None:
                h = self.n3(h)
        return h, self.head(h)


def _encoder(bands, filters, blocks, kernel_size, batch_norm, activation, use_bias, options, stochastic_depth):
    """The fine-to-coarse pass: features per level, handed to the coarse-to-fine pass as skips."""
    common = dict(kernel_size=kernel_size, activation=activation, use_bias=use_bias)
    regularizer = options["kernel_regularizer"]
    skips, previous = [], None
    for level, band in enumerate(bands):
        h = None
        if level < len(bands) - 1:
            h = BiasFreeConvBlock(filters[level], batch_norm=False, kernel_regularizer=regularizer,
                                  name=f"encoder{level}_stem", **common)(band)
        if previous is not None:
            down = keras.layers.Conv2D(filters[level], 2, strides=2, padding="same", use_bias=use_bias,
                                       kernel_initializer="he_normal", kernel_regularizer=regularizer,
                                       name=f"encoder{level}_down")(previous)
            h = down if h is None else h + down
        if level < len(bands) - 1:
            rates = stochastic_depth_rates(stochastic_depth, blocks[level])
            for i in range(blocks[level]):
                h = BiasFreeResidualBlock(filters[level], batch_norm=batch_norm, stochastic_depth=rates[i],
                                          name=f"encoder{level}_block{i}", **common, **options)(h)
        skips.append(h)
        previous = h
    return skips


def build_multiscale(
    channels: int = 1,
    pyramid: str = "laplacian",
    levels: int = 3,
    filters: PerLevel = None,
    blocks: PerLevel = 2,
    kernel_size: int = 3,
    shared: bool = False,
    batch_norm: bool = False,
    activation: str = "relu",
    predict: str = "noise",
    pass_features: bool = True,
    encoder_blocks: PerLevel = 0,
    non_local_levels: tuple = (),
    non_local_mode: str = "dot_product",
    n3_levels: tuple = (),
    n3: Optional[dict] = None,
    gate: str = "none",
    scale_invariant_gates: bool = True,
    sparsity: float = 0.0,
    stochastic_depth: float = 0.0,
    kernel_regularizer: Any = None,
    guide_channels: int = 0,
    use_bias: bool = False,
    name: str = "multiscale",
) -> keras.Model:
    """Builds a multi-scale bias-free denoiser.

    Args:
        channels: 1 (gray) or 3 (RGB).
        pyramid: `laplacian` (each level denoises its detail band; the results are merged
            coarse to fine) or `gaussian` (each level denoises its blurred copy, given the
            coarser result).
        levels: pyramid levels, >= 1.
        filters: channels of each level's backbone: an int, or one per level (finest first);
            by default 32 at the finest level, doubling at each coarser one (32 for all when shared).
        blocks: residual blocks per level: an int, or one per level.
        kernel_size: odd kernel size.
        shared: one backbone for all levels (needs an int `filters` and `blocks`).
        batch_norm: BiasFreeBatchNorm inside the residual blocks (never right before a level's
            head convolution, which reads the sum of the last block).
        activation: `relu`, `leaky_relu`, `prelu` or `linear`.
        predict: `noise` or `image`, per level.
        pass_features: add the coarser level's last features, lifted by a learned 2x2
            stride-2 transposed convolution (computed as a 1x1 convolution and a
            depth-to-space), to each finer level's stem.
        encoder_blocks: residual blocks of a fine-to-coarse encoder run before the
            coarse-to-fine pass (an int, or one per level; 0 = no encoder). The coarsest
            level has none (its backbone is the bottom of the U): an int applies to the
            other levels, and a list must end in 0. Each encoder
            level reads its own band, adds the finer level's features brought down by a
            2x2 stride-2 convolution, and hands its features to the same level of the
            coarse-to-fine pass: a U-Net (Ronneberger et al., MICCAI 2015) whose levels
            are fed the pyramid's bands.
        non_local_levels: levels whose backbone has a NonLocalBlock after its first block
            (levels with at least one block; not with `shared`).
        non_local_mode: `dot_product` or `embedded_gaussian`.
        n3_levels: levels whose backbone has an `N3Branch` after its first block (neural
            nearest neighbours on the level's features, Ploetz & Roth, NeurIPS 2018). It
            starts as the identity, so a plain model's weights give a model that computes
            the same function (`train.init_from`), and it keeps the model homogeneous.
        n3: keyword arguments of the `N3Branch`es (`channels`, `k`, `patch_size`, `stride`,
            `window`, ...); None takes its defaults. The branch's embedding network keeps its
            own BiasFreeBatchNorm (the N3Block default) whatever `batch_norm` says.
        gate, scale_invariant_gates, sparsity: residual-block options, as in
            `bfcnn.models.resnet.build_resnet` (every residual block, encoder included).
        stochastic_depth: drop rate of the deepest block of each stack of residual blocks (each
            level's backbone and each encoder level); linear in depth within a stack.
        kernel_regularizer: as in `build_resnet`, for every hidden convolution (stems,
            blocks, the lifts and the encoder's down-sampling), not the heads.
        guide_channels: channels appended to the input that the model reads but does not
            denoise (e.g. a denoised luminance guiding a chrominance channel, as in
            `bfcnn.models.opponent`). They go through the same pyramid, and each level's stem
            (and encoder stem) reads the guide's band after its own inputs, so a model's
            weights fit the guided model with zeros for the guide (`graft_weights`). The output
            has `channels` channels. Guides that scale with the input keep the model homogeneous.
        use_bias: True builds the with-bias twin, a control for experiments.
        name: model name.

    Returns:
        A keras.Model, float32 [B, H, W, channels + guide_channels] 0-255 in, [B, H, W, channels] out.
        Any H, W >= 1: with `levels` > 1 the image is mirrored up to a multiple of
        2^(levels - 1) first and the result cropped back (`ReflectToMultiple`), so the last rows
        and columns of other sizes are denoised as well as those of multiples. A side of
        2^(levels - 1) pixels or fewer still leaves a 1-pixel coarsest level, which the
        network sees only as zero padding: `bfcnn.denoise` mirrors such sides up to 8 first
        (`bfcnn.tiling.min_size_apply`); a direct call does not.
    """
    if pyramid not in PYRAMIDS:
        raise ValueError(f"pyramid={pyramid!r} is not supported; allowed: 'laplacian', 'gaussian'")
    if predict not in PREDICT:
        raise ValueError(f"predict={predict!r} is not supported; allowed: 'noise', 'image'")
    levels = check_int("levels", levels)
    if filters is None:
        filters = 32 if shared else [32 * 2**level for level in range(levels)]
    if shared and not (isinstance(filters, int) and isinstance(blocks, int)):
        raise ValueError("shared=True needs one backbone for every level: give `filters` and `blocks` as ints")
    level_filters = _per_level("filters", filters, levels)
    level_blocks = _per_level("blocks", blocks, levels)
    level_encoder = _encoder_blocks(encoder_blocks, levels, shared)
    options = block_options(gate, scale_invariant_gates, sparsity, kernel_regularizer)
    stochastic_depth_rates(stochastic_depth, 1)  # checks the range
    non_local_levels, n3_levels = _extra_block_levels(non_local_levels, n3_levels, level_blocks, shared)
    _check_n3(n3)

    def make_level(tag, level):
        return _Level(tag, channels=channels, filters=level_filters[level], blocks=level_blocks[level],
                      kernel_size=kernel_size, batch_norm=batch_norm, activation=activation, use_bias=use_bias,
                      non_local=level in non_local_levels, non_local_mode=non_local_mode, options=options,
                      stochastic_depth=stochastic_depth, n3=dict(n3 or {}) if level in n3_levels else None)

    shared_level = make_level("shared", 0) if shared else None
    inputs = image_input(channels, guide_channels)
    x = scale_in(inputs)
    if levels > 1:  # every level's edge a mirrored image edge, not a partly empty row (bfcnn.layers.padding)
        x = ReflectToMultiple(2 ** (levels - 1), name="reflect_to_levels")(x)
    # Mirrored to a multiple, every level is exactly half the one above: the expansions and
    # lifts skip their crops (gathers outside XNNPACK in TFLite that copied every feature map).
    exact = {"exact_halves": True} if pyramid == "laplacian" and levels > 1 else {}
    split = (LaplacianPyramid if pyramid == "laplacian" else GaussianPyramid)(levels, dtype="float32",
                                                                              name="pyramid", **exact)
    bands = split(x)
    if levels == 1:
        bands = [bands[0]] if isinstance(bands, (list, tuple)) else [bands]
    skips = _encoder(bands, level_filters, level_encoder, kernel_size, batch_norm, activation, use_bias, options,
                     stochastic_depth) if any(level_encoder) else [None] * levels
    image, features = None, None
    for level in reversed(range(levels)):
        band, guide = bands[level], None
        if guide_channels:
            band, guide = band[..., :channels], band[..., channels:]
        if image is None:
            context = ops.zeros_like(band)
        else:
            context = UpsampleLike(crop=False, dtype="float32", name=f"level{level}_context")([image, band])
        backbone = shared_level or make_level(f"level{level}", level)
        h, out = backbone(band, context, features if pass_features and image is not None else None,
                          skips[level], level, guide)
        out = ops.cast(out, "float32")
        estimate = band - out if predict == "noise" else out
        image = estimate + context if pyramid == "laplacian" else estimate
        features = h
    if levels > 1:
        image = CropLike(dtype="float32", name="crop_to_input")([image, inputs])
    outputs = denoiser_head(inputs[..., :channels] if guide_channels else inputs, image, "image")
    return keras.Model(inputs, outputs, name=name)


def lift_kernel_from_transposed(kernel) -> np.ndarray:
    """The [1, 1, C, 4F] kernel of a lift from a 2x2 stride-2 `Conv2DTranspose` kernel [2, 2, F, C].

    Output channel `(a * 2 + b) * F + o` of the 1x1 convolution lands, after depth-to-space,
    at offset (a, b) of each 2x2 block, where the transposed convolution applies `kernel[a, b, o, :]`.
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 4 or kernel.shape[:2] != (2, 2):
        raise ValueError(f"expected a 2x2 transposed-convolution kernel [2, 2, F, C], got shape {kernel.shape}")
    return np.transpose(kernel, (3, 0, 1, 2)).reshape(1, 1, kernel.shape[3], 4 * kernel.shape[2])


def has_legacy_lifts(model: keras.Model) -> bool:
    """Whether `model` was saved with `Conv2DTranspose` lifts (before they became 1x1 + depth-to-space)."""
    return any(isinstance(layer, keras.layers.Conv2DTranspose) for layer in model.layers)


def copy_legacy_weights(model: keras.Model, legacy: keras.Model) -> keras.Model:
    """Copies the weights of a multiscale model whose lifts are `Conv2DTranspose` layers into `model`.

    Multiscale models saved before the lifts became 1x1 convolutions + depth-to-space (same
    map, faster in TFLite) load as they were saved; this moves their weights, layer by layer
    and by name, into a model built by today's `build_multiscale` from the same config, so
    both compute the same function.

    Raises:
        ValueError: a layer with weights is missing from `legacy` or has other shapes.
    """
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            source = legacy.get_layer(layer.name)
        except ValueError:
            raise ValueError(f"layer {layer.name!r} of {model.name!r} is not in {legacy.name!r}: "
                             "not the same architecture") from None
        weights = source.get_weights()
        if isinstance(source, keras.layers.Conv2DTranspose):
            weights = [lift_kernel_from_transposed(weights[0])] + [np.tile(b, 4) for b in weights[1:]]
        expected = [tuple(w.shape) for w in layer.weights]
        if [tuple(np.shape(w)) for w in weights] != expected:
            raise ValueError(f"layer {layer.name!r}: weights of shapes {[np.shape(w) for w in weights]} "
                             f"do not fit {expected}: not the same architecture")
        layer.set_weights(weights)
    return model
