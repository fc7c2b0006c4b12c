"""The exported models' interface: input and output names and the value range."""

INPUT_NAME = "image"
OUTPUT_NAME = "denoised"
VALUE_RANGE = (0.0, 255.0)


def model_channels(model) -> int:
    """The number of image channels a denoiser takes (1 gray, 3 RGB)."""
    return int(model.input_shape[-1])
