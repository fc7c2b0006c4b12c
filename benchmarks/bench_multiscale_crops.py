"""What the crops inside a multiscale model cost: today's graph against one that crops, Keras and LiteRT.

A multiscale model (`bfcnn.models.multiscale`) mirrors its input up to a multiple of
2^(levels - 1), so every pyramid level is exactly half the one above, and its expansions and
feature lifts need not crop their results (`LaplacianPyramid(exact_halves=True)`,
`UpsampleLike(crop=False)`, `PixelShuffle(crop=False)`). This times the model as built today
against the same weights in a graph whose expansions and lifts crop to the finer level (what
the builder made before; in TFLite each crop is a pair of gathers outside the XNNPACK delegate),
each in Keras (graph mode) and LiteRT, in interleaved rounds on one noisy image.

    python benchmarks/bench_multiscale_crops.py --model pyramid_gray_m --size 1024 --runs 5
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def with_crops(model):
    """`model` (same weights) with every pyramid expansion and feature lift cropping to its reference."""
    import keras

    from bfcnn.layers import LaplacianPyramid, PixelShuffle, UpsampleLike

    def cropping(layer):
        config = layer.get_config()
        if isinstance(layer, LaplacianPyramid):
            config["exact_halves"] = False
        elif isinstance(layer, (PixelShuffle, UpsampleLike)):
            config["crop"] = True
        elif isinstance(layer, keras.Model):  # an opponent model's gray network
            return keras.models.clone_model(layer, clone_function=cropping)
        return layer.__class__.from_config(config)

    cropped = keras.models.clone_model(model, clone_function=cropping)
    cropped.set_weights(model.get_weights())
    return cropped


def main(argv=None) -> int:
    from graph_timing import parser_for, report

    args = parser_for(__doc__, "pyramid_gray_m", 1024, 5).parse_args(argv)

    import bfcnn
    from bfcnn.layers import LaplacianPyramid

    model = bfcnn.load_model(args.model)
    if not any(isinstance(layer, LaplacianPyramid) for layer in model._flatten_layers()):
        print(f"error: {args.model!r} has no Laplacian pyramid (a multiscale model, or an opponent one around it)",
              file=sys.stderr)
        return 2
    report({"no crops (today)": model, "crops in expansions and lifts": with_crops(model)}, args)
    return 0

if __name__ == "__main__":
    sys.exit(main())
