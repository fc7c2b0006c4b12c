"""Does the opponent color model's batch fold slow its TFLite file down? Keras against LiteRT, two graphs.

An opponent model (`bfcnn.models.opponent`) folds its three channels into the batch and runs
its gray network once on a batch of three. This times that graph against one with the same
weights that runs the gray network three times on batches of one, each in Keras (graph mode)
and in LiteRT (XNNPACK, converted with `bfcnn.export.to_tflite`), in interleaved rounds on one
noisy image, and prints the median ms per megapixel and TFLite / Keras for each graph.

    python benchmarks/bench_opponent_fold.py --model pyramid_color_m --size 512 --runs 7
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def three_passes(folded):
    """The opponent model `folded` with its gray network called once per channel (same weights)."""
    import keras

    from bfcnn.layers.color import ChromaOffset, OpponentTransform
    from bfcnn.models.common import image_input

    gray = folded.get_layer("gray")
    offset_layer = folded.get_layer("chroma_offset")
    inputs = image_input(3)
    opponent = OpponentTransform(name="to_opponent")(inputs)
    offset = ChromaOffset(offset_layer.scale, name="chroma_offset")(opponent)
    lifted = keras.layers.Add(dtype="float32", name="lift")([opponent, offset])
    passes = [keras.ops.cast(gray(lifted[..., c:c + 1]), "float32") for c in range(3)]
    denoised = keras.layers.Concatenate(name="merge")(passes)
    lowered = keras.layers.Subtract(dtype="float32", name="lower")([denoised, offset])
    return keras.Model(inputs, OpponentTransform(inverse=True, name="to_rgb")(lowered), name="three_passes")


def main(argv=None) -> int:
    from graph_timing import parser_for, report

    args = parser_for(__doc__, "pyramid_color_m", 512, 7).parse_args(argv)

    import bfcnn

    folded = bfcnn.load_model(args.model)
    if not any(layer.name == "gray" for layer in folded.layers):
        print(f"error: {args.model!r} is not an opponent model (no layer 'gray')", file=sys.stderr)
        return 2
    report({"batch of 3 (as shipped)": folded, "3 passes of batch 1": three_passes(folded)}, args)
    return 0

if __name__ == "__main__":
    sys.exit(main())
