"""Where a non-local block looks (Wang et al., "Non-local Neural Networks", CVPR 2018), on a real image.

    python scripts/plot_attention.py           # writes docs/figures/non_local_attention.png

A small ResNet denoiser with one embedded-Gaussian NonLocalBlock after its first residual
block (`non_local_after: [0]`) is built and trained for `--steps` steps (well under a
minute of CPU) on 48x48 patches of scikit-image's camera with noise of std uniform in
[0, 50]. For query pixels of Set12's cameraman, shrunk to 128x128 (scikit-image's camera
when ../shared/datasets is absent), with noise of std 25, the figure shows the block's
attention row (alone, on the image's frame) `softmax_j(theta_i . phi_j)` over the 2x2-subsampled key grid, before and
after training (`NonLocalBlock.attention`). Printed per query: the effective number of
keys (exp of the attention's entropy, out of all keys), the attention-weighted mean
distance to the query and its mean |intensity difference| with the query, against the
same for uniform attention. Needs matplotlib.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_tables import save_figure  # noqa: E402  (same folder)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from plot_adaptive_filters import load_image  # noqa: E402  (same folder)

# (row, column, what is there) on the 128x128 image.
QUERIES = ((20, 100, "sky"), (70, 40, "coat"), (110, 70, "grass"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--size", type=int, default=128, help="the image is resized to size x size")
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures" / "non_local_attention.png"))
    return parser.parse_args(argv)


def build(seed):
    import keras

    import bfcnn

    keras.utils.set_random_seed(seed)
    return bfcnn.build_model({"type": "resnet", "channels": 1, "filters": 16, "blocks": 2, "batch_norm": False,
                              "non_local_after": [0], "non_local_mode": "embedded_gaussian"})


def train(model, steps, seed):
    """Adam on noisy 48x48 patches of skimage's camera, sigma ~ U[0, 50]; returns the losses."""
    import keras
    import tensorflow as tf
    from skimage import data

    image = tf.constant(data.camera().astype(np.float32)[None, ..., None])
    optimizer = keras.optimizers.Adam(2e-3)
    generator = tf.random.Generator.from_seed(seed)

    @tf.function
    def step():
        clean = tf.image.random_crop(tf.repeat(image, 8, axis=0), [8, 48, 48, 1], seed=None)
        sigma = generator.uniform([8, 1, 1, 1], 0.0, 50.0)
        noisy = clean + sigma * generator.normal(tf.shape(clean))
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(noisy, training=True) - clean))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    return [float(step()) for _ in range(steps)]


def attention_rows(model, noisy, queries):
    """The NonLocalBlock's attention rows of the queries, each [H_k, W_k]."""
    import keras

    block = model.get_layer("non_local0")
    features = keras.Model(model.inputs, block.input)([noisy[None, ..., None]])
    spatial = np.asarray(block.attention(features, spatial=True))[0]
    return [spatial[r, c] for r, c, _ in queries]


def describe(row, noisy, query):
    """Effective keys, attention-weighted distance and |intensity difference|, and uniform's."""
    hk, wk = row.shape
    h, w = noisy.shape
    # A key is a 2x2 max-pooled cell; its position is the cell centre and its intensity the cell mean.
    padded = np.pad(noisy, ((0, 2 * hk - h), (0, 2 * wk - w)), mode="edge")
    cells = padded.reshape(hk, 2, wk, 2).mean(axis=(1, 3))
    rr, cc = np.meshgrid(2 * np.arange(hk) + 0.5, 2 * np.arange(wk) + 0.5, indexing="ij")
    distance = np.hypot(rr - query[0], cc - query[1])
    difference = np.abs(cells - noisy[query[0], query[1]])
    p = row / row.sum()
    entropy = -np.sum(p[p > 0] * np.log(p[p > 0]))
    return {"effective_keys": float(np.exp(entropy)), "keys": int(row.size),
            "distance": float(np.sum(p * distance)), "uniform_distance": float(distance.mean()),
            "difference": float(np.sum(p * difference)), "uniform_difference": float(difference.mean())}


def main(argv=None):
    args = parse_args(argv)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    image, source = load_image(None)
    clean = np.asarray(Image.fromarray(image).resize((args.size, args.size), Image.BILINEAR), np.float32)
    noisy = clean + args.sigma * np.random.default_rng(args.seed).standard_normal(clean.shape).astype(np.float32)

    model = build(args.seed)
    before = attention_rows(model, noisy, QUERIES)
    start = time.process_time()
    losses = train(model, args.steps, args.seed)
    cpu = time.process_time() - start
    after = attention_rows(model, noisy, QUERIES)
    gamma = np.asarray(model.get_layer("non_local0").norm.weights[0])
    print(f"image {source} resized to {args.size}x{args.size}, noise sigma {args.sigma:g}; trained {args.steps} steps "
          f"in {cpu:.1f} CPU s, MSE {np.mean(losses[:20]):.1f} -> {np.mean(losses[-20:]):.1f}; "
          f"block output scale |gamma| mean {np.mean(np.abs(gamma)):.3f} (0 at init)")
    print(f"{'query':>16} {'state':>8} {'eff. keys':>14} {'dist px':>8} {'uniform':>8} {'|dI|':>7} {'uniform':>8}")
    stats = {}
    for (r, c, name), row_before, row_after in zip(QUERIES, before, after):
        for state, row in (("init", row_before), ("trained", row_after)):
            s = describe(row, noisy, (r, c))
            stats[(name, state)] = s
            print(f"{name + f' ({r},{c})':>16} {state:>8} {s['effective_keys']:8.0f}/{s['keys']:<5} "
                  f"{s['distance']:8.1f} {s['uniform_distance']:8.1f} {s['difference']:7.1f} "
                  f"{s['uniform_difference']:8.1f}")

    figure = Figure(figsize=(8.4, 2.75 * len(QUERIES)), dpi=65)
    grid = figure.subplots(len(QUERIES), 3, squeeze=False)
    from matplotlib.colors import LogNorm

    for i, ((r, c, name), row_before, row_after) in enumerate(zip(QUERIES, before, after)):
        grid[i, 0].imshow(clean, cmap="gray", vmin=0, vmax=255)
        grid[i, 0].plot([c], [r], "o", markersize=9, markerfacecolor="none", markeredgecolor="#ff3030",
                        markeredgewidth=2)
        grid[i, 0].set_title(f"{name} query ({r}, {c}), clean", fontsize=9)
        for j, (state, row) in enumerate((("init", row_before), ("trained", row_after))):
            axes = grid[i, j + 1]
            # Key cell (i, j) covers pixels 2i..2i+1, 2j..2j+1: drawn over the image's extent.
            # A log scale: peaked rows would otherwise show a few dots on black.
            norm = LogNorm(vmin=max(float(row.max()) * 1e-4, 1e-12), vmax=float(row.max()), clip=True)
            shown_map = axes.imshow(row, cmap="magma", norm=norm, interpolation="nearest",
                                    extent=(-0.5, 2 * row.shape[1] - 0.5, 2 * row.shape[0] - 0.5, -0.5))
            axes.plot([c], [r], "+", color="#00e0ff", markersize=10, markeredgewidth=2)
            s = stats[(name, state)]
            axes.set_title(f"{state}: {s['effective_keys']:.0f} effective keys", fontsize=9)
            figure.colorbar(shown_map, ax=axes, fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
        for axes in grid[i]:
            axes.set_xticks([])
            axes.set_yticks([])
    figure.suptitle("NonLocalBlock attention (embedded Gaussian) of a small ResNet denoiser", fontsize=10)
    figure.tight_layout()
    FigureCanvasAgg(figure)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(figure, out)  # whole or not at all
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
