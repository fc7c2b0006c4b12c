"""The subspace a bias-free denoiser projects onto shrinks as the noise grows (Mohan et al., ICLR 2020).

    python scripts/plot_effective_dimension.py         # writes docs/figures/effective_dimension.png

For small crops of Set12's cameraman (scikit-image's camera, halved, when ../shared/datasets
is absent), the full Jacobian A(y) of the zoo model `pyramid_gray_m` is computed at several
noise levels (the crop is the model's whole input; the same noise pattern, scaled) and
decomposed. The effective dimension is `sum(s_i^2)`, the squared Frobenius norm of A
(the rank of an orthogonal projection); `trace(A)` is printed beside it. Needs matplotlib.
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

from plot_adaptive_filters import load_image, require_size  # noqa: E402  (same folder)

# (top, left, what is there) of the crops on the 256x256 cameraman.
CROPS = ((28, 188, "flat sky"), (93, 22, "coat edge"), (224, 138, "grass"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pyramid_gray_m")
    parser.add_argument("--image", default=None, help="a gray image (default: Set12 01.png, else skimage camera)")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[5, 15, 25, 50, 75, 100])
    parser.add_argument("--size", type=int, default=24, help="crop size (the Jacobian is size^2 x size^2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures" / "effective_dimension.png"))
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    import bfcnn
    from bfcnn.explain import effective_dimensionality

    model = bfcnn.load_model(args.model)
    clean, source = load_image(args.image)
    size = args.size
    require_size(clean, max(t for t, _, _ in CROPS) + size, max(c for _, c, _ in CROPS) + size,
                 f"the {size}x{size} crops")
    clean = clean.astype(np.float32)
    print(f"model {args.model}, image {source}, {size}x{size} crops, noise seed {args.seed}; "
          f"dimension = sum of squared singular values of A(y), out of {size * size}")
    print(f"{'crop':>10} {'sigma':>6} {'dimension':>10} {'trace':>8} {'s_max':>6} {'#s>0.5':>7} {'seconds':>8}")
    spectra, dims, traces = {}, {}, {}
    for top, left, name in CROPS:
        crop = clean[top : top + size, left : left + size]
        noise = np.random.default_rng(args.seed).standard_normal(crop.shape).astype(np.float32)
        for sigma in args.sigmas:
            start = time.perf_counter()
            result = effective_dimensionality(model, crop + np.float32(sigma) * noise)
            spectra[(name, sigma)] = result.singular_values
            dims[(name, sigma)], traces[(name, sigma)] = result.dimension, result.trace
            print(f"{name:>10} {sigma:6g} {result.dimension:10.1f} {result.trace:8.1f} "
                  f"{result.singular_values[0]:6.2f} {int(np.sum(result.singular_values > 0.5)):7d} "
                  f"{time.perf_counter() - start:8.1f}", flush=True)

    figure = Figure(figsize=(11, 3.8), dpi=80)
    left_axes, right_axes = figure.subplots(1, 2)
    shown = CROPS[-1][2]
    colors = [f"C{i}" for i in range(10)]
    for i, sigma in enumerate(args.sigmas):
        values = spectra[(shown, sigma)]
        left_axes.plot(np.arange(1, len(values) + 1), values, color=colors[i % 10],
                       label=f"sigma {sigma:g}: dim {dims[(shown, sigma)]:.0f}")
    left_axes.set_xscale("log")
    left_axes.set_xlabel("index")
    left_axes.set_ylabel("singular value of A(y)")
    left_axes.set_title(f"spectrum, {shown} crop", fontsize=9)
    left_axes.legend(fontsize=8)
    left_axes.grid(True, alpha=0.3)
    for i, (_, _, name) in enumerate(CROPS):
        right_axes.plot(args.sigmas, [dims[(name, s)] for s in args.sigmas], "o-", color=colors[i],
                        label=f"{name}: sum s^2")
        right_axes.plot(args.sigmas, [traces[(name, s)] for s in args.sigmas], "x--", color=colors[i],
                        alpha=0.6, label=f"{name}: trace")
    right_axes.set_yscale("log")
    right_axes.set_xlabel("noise sigma (0-255)")
    right_axes.set_ylabel("effective dimension")
    right_axes.set_title(f"out of {size * size} ({size}x{size} crops)", fontsize=9)
    right_axes.legend(fontsize=7)
    right_axes.grid(True, alpha=0.3)
    figure.suptitle(f"Jacobian spectrum of {args.model} on {source}", fontsize=9)
    figure.tight_layout()
    FigureCanvasAgg(figure)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(figure, out)  # whole or not at all
    print(f"wrote {out} ({out.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
