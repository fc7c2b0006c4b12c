"""The opponent color transform and the chrominance lift in numpy, for running color models in tiles.

The zoo's color models run a gray network on the channels of CBM3D's orthonormal
luminance-chrominance transform (Dabov et al., ICIP 2007; `bfcnn.layers.color`), with the two
chrominance channels lifted by a multiple of the image's mean gray level. That mean is the
models' one image-wide statistic: a tile of the image has another. Tiled inference therefore
takes the offset from the whole image (`chroma_offset`) and applies the transform and the
lift tile by tile around the networks (`lift`, `lower`: both per pixel), as
`bfcnn.inference.denoise` does with a Keras model and `bfcnn.lite.TFLiteDenoiser` with an
exported file of the networks (`model_lifted.tflite`). Numpy only: no TensorFlow or Keras.
"""

import math

import numpy as np

_S3, _S2, _S6 = math.sqrt(3.0), math.sqrt(2.0), math.sqrt(6.0)
# Rows: Y, C1, C2 as combinations of R, G, B (orthonormal, so the inverse is the transpose).
OPPONENT = (
    (1 / _S3, 1 / _S3, 1 / _S3),
    (1 / _S2, 0.0, -1 / _S2),
    (1 / _S6, -2 / _S6, 1 / _S6),
)


def chroma_offset(rgb: np.ndarray, scale: float) -> np.ndarray:
    """The lift [3] of a float [H, W, 3] RGB image: (0, s*m, s*m), m its mean gray level (the
    mean of Y / sqrt(3), as `bfcnn.layers.color.ChromaOffset` computes), summed in float64."""
    mean_rgb = np.mean(np.asarray(rgb).reshape(-1, 3), axis=0, dtype=np.float64)
    mean_gray = float(mean_rgb @ np.asarray(OPPONENT[0], np.float64)) / _S3
    return np.array([0.0, scale * mean_gray, scale * mean_gray], np.float32)


def lift(rgb: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """float [H, W, 3] RGB (an image or a tile of it) -> its lifted opponent channels, float32."""
    lifted = np.asarray(rgb, np.float32) @ np.asarray(OPPONENT, np.float32).T
    lifted += offset
    return lifted


def lower(lifted: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Denoised lifted channels (float [H, W, 3]) and the offset -> RGB float32."""
    return (np.asarray(lifted, np.float32) - offset) @ np.asarray(OPPONENT, np.float32)
