"""A color denoiser made of a gray one: the gray network runs on each opponent channel.

The image goes to the orthonormal luminance-chrominance space of CBM3D (Dabov et al., ICIP
2007; `bfcnn.layers.color`), the chrominance channels are lifted by a multiple of the mean
gray level, the three channels are folded into the batch and denoised by one shared gray
network, and the result goes back to RGB. Noise white in RGB stays white with the same std in
every opponent channel, so a blind gray denoiser works unchanged: a gray flagship's weights
give a color model before any color training (`train.init_from` accepts a gray `.keras`
file for this model type), and color training then fine-tunes the shared network.

With `chroma: shared` the channels share no features: what CBM3D takes from the luminance to
group the chrominance patches, this model does not. With `chroma: guided` the luminance is
denoised first, by the gray network, and a second network of the same architecture denoises
each chrominance channel reading the denoised luminance as a guide (`guide_channels` of
`build_multiscale`): the edges and textures of the luminance, which has the most signal,
tell the chrominance where to smooth. It starts as a copy of the gray network that ignores
its guide (`seed_chroma_from_gray`). Either way it costs three gray passes per pixel.
"""

from typing import Optional

import keras
import numpy as np
from keras import ops

from bfcnn.layers.color import BatchToChannels, ChannelsToBatch, ChromaOffset, OpponentTransform
from bfcnn.models.common import image_input
from bfcnn.models.transfer import graft_weights
from bfcnn.opponent_lift import chroma_offset, lift, lower

DEFAULT_INNER = {"type": "multiscale", "channels": 1}
CHROMA = ("shared", "guided")


def build_opponent(
    channels: int = 3,
    inner: Optional[dict] = None,
    chroma_offset: float = 1.0,
    chroma: str = "shared",
    name: str = "opponent",
) -> keras.Model:
    """Builds a color denoiser from a gray network run on the opponent channels.

    Args:
        channels: 3 (the model is for RGB images).
        inner: the gray network's model config (`type` and its keys, `channels: 1`); the
            default is a default `multiscale` model.
        chroma_offset: the lift of the two chrominance channels, in units of the image's
            mean gray level (it scales with the input, so the model stays homogeneous).
        chroma: `shared` (one network for the three channels) or `guided` (a second network,
            guided by the denoised luminance, for the chrominance; needs a `multiscale` inner).
        name: model name.

    Returns:
        A keras.Model, float32 [B, H, W, 3] 0-255 in and out, whose layer `gray` is the
        inner network (and `chroma` the chrominance network when guided).
    """
    from bfcnn.models.builder import model_builder, resolve_model_config

    if channels != 3:
        raise ValueError(f"channels must be 3 for an opponent model (it denoises RGB), got {channels!r}")
    inner = DEFAULT_INNER if inner is None else inner
    if not isinstance(inner, dict) or inner.get("type") == "opponent":
        raise ValueError(f"inner must be the model config of a gray network (not opponent), got {inner!r}")
    inner = dict(inner)
    inner.setdefault("channels", 1)
    if inner["channels"] != 1:
        raise ValueError(f"inner.channels must be 1 (the network denoises one channel at a time), "
                         f"got {inner['channels']!r}")
    if chroma not in CHROMA:
        raise ValueError(f"chroma={chroma!r} is not supported; allowed: 'shared', 'guided'")
    if chroma == "guided" and inner.get("type") != "multiscale":
        raise ValueError(f"chroma='guided' needs a multiscale inner network (it reads a guide), "
                         f"got type {inner.get('type')!r}")
    resolved = resolve_model_config(inner, where="model.inner")
    build = model_builder(resolved.pop("type"))
    gray = build(**resolved, name="gray")
    chroma_net = build(**{**resolved, "guide_channels": 1}, name="chroma") if chroma == "guided" else None
    return wrap_gray(gray, chroma_offset, name=name, chroma=chroma_net)


def wrap_gray(gray: keras.Model, chroma_offset: float = 1.0, name: str = "opponent",
              chroma: Optional[keras.Model] = None) -> keras.Model:
    """The opponent color model around an existing gray network (its weights shared, not copied).

    Args:
        gray: a denoiser of [B, H, W, 1] images, e.g. `bfcnn.load_model("pyramid_gray_m")`.
        chroma_offset: as in `build_opponent`.
        name: model name.
        chroma: None (`gray` denoises all three channels), or a network of [B, H, W, 2]
            images (a chrominance channel and the denoised luminance as its guide) to 1 channel.
    """
    if gray.input_shape[-1] != 1:
        raise ValueError(f"the network must take 1 channel, it takes {gray.input_shape[-1]}")
    if chroma is not None and chroma.input_shape[-1] != 2:
        raise ValueError(f"the chrominance network must take 2 channels (a channel and its guide), "
                         f"it takes {chroma.input_shape[-1]}")
    inputs = image_input(3)
    opponent = OpponentTransform(name="to_opponent")(inputs)
    try:
        layer = ChromaOffset(chroma_offset, name="chroma_offset")
    except ValueError as error:  # the layer's own argument is `scale`
        raise ValueError(f"chroma_offset must be a number >= 0, got {chroma_offset!r}") from error
    offset = layer(opponent)
    lifted = keras.layers.Add(dtype="float32", name="lift")([opponent, offset])
    denoised = _denoise_lifted(lifted, gray, chroma)
    lowered = keras.layers.Subtract(dtype="float32", name="lower")([denoised, offset])
    outputs = OpponentTransform(inverse=True, name="to_rgb")(lowered)
    return keras.Model(inputs, outputs, name=name)


def _denoise_lifted(lifted, gray: keras.Model, chroma: Optional[keras.Model]):
    """The networks' part of an opponent model: lifted opponent channels in, denoised out."""
    if chroma is None:
        return BatchToChannels(3, name="unfold")(gray(ChannelsToBatch(name="fold")(lifted)))
    luminance = ops.cast(gray(lifted[..., :1]), "float32")
    guide = ChannelsToBatch(name="fold_guide")(keras.layers.Concatenate(name="repeat_guide")([luminance] * 2))
    folded = ChannelsToBatch(name="fold")(lifted[..., 1:])
    chrominance = BatchToChannels(2, name="unfold")(chroma(keras.layers.Concatenate(name="guide")([folded, guide])))
    return keras.layers.Concatenate(name="merge")([luminance, chrominance])


def is_opponent(model) -> bool:
    """Whether `model` is an opponent color model built by `wrap_gray` (zoo color models are)."""
    if not isinstance(model, keras.Model):
        return False
    names = {layer.name: layer for layer in model.layers}
    return isinstance(names.get("chroma_offset"), ChromaOffset) and isinstance(names.get("gray"), keras.Model)


class LiftedParts:
    """An opponent model cut where its one image-wide statistic enters, for tiled inference.

    The model lifts the chrominance by the mean gray level of the image it is given; a tile
    would use its own mean, and its result would depend on where the tile lies (up to several
    gray levels over whole tiles next to dark or bright regions). `offset` is that lift for
    the whole image; `lift` and `lower` apply it and undo it (per pixel, so they may run tile
    by tile); `network` (a keras.Model sharing the model's weights) denoises lifted channels and
    has no image-wide statistic, so it can be tiled. `lower(network(lift(x, offset(x))))`
    computes what the model does, up to float rounding; on a tile of x, with x's offset, it
    computes what a tile of the model's output would be with the whole image in view.
    """

    def __init__(self, model: keras.Model):
        if not is_opponent(model):
            raise ValueError(f"{model.name!r} is not an opponent color model")
        self.scale = float(model.get_layer("chroma_offset").scale)
        chroma = model.get_layer("chroma") if has_guided_chroma(model) else None
        inputs = image_input(3)
        self.network = keras.Model(inputs, _denoise_lifted(inputs, model.get_layer("gray"), chroma),
                                   name=f"{model.name}_lifted")

    def offset(self, rgb: np.ndarray) -> np.ndarray:
        """The lift [3] of a float [H, W, 3] RGB image (`bfcnn.opponent_lift.chroma_offset`)."""
        return chroma_offset(rgb, self.scale)

    lift = staticmethod(lift)
    lower = staticmethod(lower)


def has_guided_chroma(model: keras.Model) -> bool:
    """Whether `model` is an opponent model with a guided chrominance network."""
    return any(layer.name == "chroma" and isinstance(layer, keras.Model) for layer in model.layers)


def seed_chroma_from_gray(model: keras.Model) -> None:
    """Copies the gray network's weights into the chrominance network, with zeros for its guide.

    The chrominance network then denoises as the gray one did, ignoring the luminance, and
    training teaches it to read the guide (`bfcnn.models.transfer.graft_weights`).
    """
    graft_weights(model.get_layer("chroma"), model.get_layer("gray"))
