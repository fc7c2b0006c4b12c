"""A color denoiser made of a gray one: the gray network runs on each opponent channel.

The image goes to the orthonormal luminance-chrominance space of CBM3D (Dabov et al., ICIP
2007; `bfcnn.layers.color`), the chrominance channels are lifted by a multiple of the mean
gray level, the three channels are folded into the batch and denoised by one shared gray
network, and the result goes back to RGB. Noise white in RGB stays white with the same std in
every opponent channel, so a blind gray denoiser works unchanged: a gray flagship's weights
give a color model before any color training (`train.init_from` accepts a gray `.keras`
file for this model type), and color training then fine-tunes the shared network.

The channels share no features: what CBM3D takes from the luminance to group the chrominance
patches, this model does not. It costs three gray passes per pixel.
"""

from typing import Optional

import keras

from bfcnn.layers.color import BatchToChannels, ChannelsToBatch, ChromaOffset, OpponentTransform
from bfcnn.models.common import image_input

DEFAULT_INNER = {"type": "multiscale", "channels": 1}


def build_opponent(
    channels: int = 3,
    inner: Optional[dict] = None,
    chroma_offset: float = 1.0,
    name: str = "opponent",
) -> keras.Model:
    """Builds a color denoiser that shares one gray network over the opponent channels.

    Args:
        channels: 3 (the model is for RGB images).
        inner: the gray network's model config (`type` and its keys, `channels: 1`); the
            default is a default `multiscale` model.
        chroma_offset: the lift of the two chrominance channels, in units of the image's
            mean gray level (it scales with the input, so the model stays homogeneous).
        name: model name.

    Returns:
        A keras.Model, float32 [B, H, W, 3] 0-255 in and out, whose layer `gray` is the
        inner network.
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
    resolved = resolve_model_config(inner, where="model.inner")
    gray = model_builder(resolved.pop("type"))(**resolved, name="gray")
    return wrap_gray(gray, chroma_offset, name=name)


def wrap_gray(gray: keras.Model, chroma_offset: float = 1.0, name: str = "opponent") -> keras.Model:
    """The opponent color model around an existing gray network (its weights shared, not copied).

    Args:
        gray: a denoiser of [B, H, W, 1] images, e.g. `bfcnn.load_model("pyramid_gray_m")`.
        chroma_offset: as in `build_opponent`.
        name: model name.
    """
    if gray.input_shape[-1] != 1:
        raise ValueError(f"the network must take 1 channel, it takes {gray.input_shape[-1]}")
    inputs = image_input(3)
    opponent = OpponentTransform(name="to_opponent")(inputs)
    offset = ChromaOffset(chroma_offset, name="chroma_offset")(opponent)
    lifted = keras.layers.Add(dtype="float32", name="lift")([opponent, offset])
    denoised = BatchToChannels(3, name="unfold")(gray(ChannelsToBatch(name="fold")(lifted)))
    lowered = keras.layers.Subtract(dtype="float32", name="lower")([denoised, offset])
    outputs = OpponentTransform(inverse=True, name="to_rgb")(lowered)
    return keras.Model(inputs, outputs, name=name)
