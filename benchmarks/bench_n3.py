"""N3 block time and peak memory against image size, tiled (bfcnn) vs all-pairs distances.

Each measurement runs in its own subprocess, so its peak resident memory
(`resource.getrusage(...).ru_maxrss`) is its own. Prints a Markdown table.

    python benchmarks/bench_n3.py                      # 128^2 .. 1024^2, and N3Net at 1024^2
    python benchmarks/bench_n3.py --sizes 128 256 --repeats 2
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

# The all-pairs version is skipped where its estimated memory exceeds this.
ALL_PAIRS_LIMIT_GB = 6.0
BLOCK = dict(k=7, embedding_channels=8, patch_size=10, stride=5, window=15)


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _all_pairs(block, x):
    """The block's output computed from the full M x M patch distance matrix, then gathered."""
    from keras import ops

    from bfcnn.layers.n3_windows import candidate_indices
    from bfcnn.layers.patches import fold_patches, unfold_patches
    from bfcnn.ops import neural_nearest_neighbors

    p, s = block.patch_size, block.stride
    e, t = x, x
    for layer in block.embedding:
        e = layer(e, training=False)
    for layer in block.temperature:
        t = layer(t, training=False)
    e_patches = unfold_patches(e, p, s)
    n_h, n_w = e_patches.shape[1], e_patches.shape[2]
    e_patches = ops.reshape(e_patches, (1, n_h * n_w, -1))
    log_t = ops.reshape(ops.mean(unfold_patches(t, p, s), axis=-1), (1, -1, 1))
    x_patches = unfold_patches(x, p, s)
    x_patches = ops.reshape(x_patches, (1, n_h * n_w, -1))
    squares = ops.sum(ops.square(e_patches), axis=-1)
    full = squares[:, :, None] + squares[:, None, :] - 2.0 * ops.matmul(e_patches, ops.transpose(e_patches, (0, 2, 1)))
    candidates = candidate_indices(n_h, n_w, block.window)
    d = ops.maximum(ops.take_along_axis(full, candidates[None], axis=2), 0.0)
    del full
    w = neural_nearest_neighbors(d, log_t, block.k)
    gathered = ops.take(x_patches, candidates, axis=1)  # [1, M, O, F]
    out = [x]
    for j in range(block.k):
        z = ops.einsum("bmo,bmof->bmf", w[..., j], gathered)
        z = fold_patches(ops.reshape(z, (1, n_h, n_w, -1)), x.shape[1], x.shape[2], p, s)
        out.append(z - x)
    return ops.concatenate(out, axis=-1)


def _all_pairs_gb(size):
    """Rough memory of the all-pairs version: three M x M matrices and two [M, O, F] gathers."""
    p, s, w = BLOCK["patch_size"], BLOCK["stride"], BLOCK["window"]
    m = ((size - p + s - 1) // s + 1) ** 2
    return (3 * m * m + 2 * m * (w * w - 1) * p * p) * 4 / 1e9


def child(kind, size, repeats):
    """One measurement; prints a JSON line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    import tensorflow as tf

    from bfcnn.layers.n3 import N3Block

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).uniform(0.0, 1.0, size=(1, size, size, 1)).astype("float32")
    if kind == "n3net":
        from bfcnn.models.n3net import build_n3net

        model = build_n3net(channels=1)
        fn = tf.function(lambda images: model(images, training=False))
        x = x * 255.0
    else:
        block = N3Block(**BLOCK)
        block(x[:, :32, :32])
        if kind == "tiled":
            fn = tf.function(lambda images: block(images, training=False))
        else:
            fn = tf.function(lambda images: _all_pairs(block, images))
    spec = tf.TensorSpec(x.shape, tf.float32)
    concrete = fn.get_concrete_function(spec)
    base_mb = _peak_rss_mb()
    y = concrete(tf.constant(x))  # warm-up
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        y = concrete(tf.constant(x))
        np.asarray(y)
        times.append(time.perf_counter() - start)
        cpu_times.append(_cpu_seconds() - cpu_start)
    result = dict(kind=kind, size=size, seconds=float(np.median(times)), cpu_seconds=float(np.median(cpu_times)),
                  peak_mb=_peak_rss_mb(), before_mb=base_mb)
    if kind != "n3net" and size <= 256:
        # Cross-check: both versions compute the same block.
        other = _all_pairs(block, tf.constant(x)) if kind == "tiled" else block(x, training=False)
        result["max_abs_difference"] = float(np.max(np.abs(np.asarray(other) - np.asarray(y))))
    print(json.dumps(result))


def measure(kind, size, repeats):
    command = [sys.executable, __file__, "--child", kind, str(size), "--repeats", str(repeats)]
    proc = subprocess.run(command, capture_output=True, text=True)
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return dict(kind=kind, size=size, error=(proc.stderr.strip().splitlines() or ["failed"])[-1][:120])


def machine():
    import tensorflow as tf

    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        load = "load average %.1f" % os.getloadavg()[0]
    except OSError:
        load = ""
    return (f"{os.cpu_count()} CPU cores ({cpu}), {platform.system()}, Python {platform.python_version()}, "
            f"TensorFlow {tf.__version__}, {load}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-n3net", action="store_true", help="skip the 1024^2 N3Net measurement")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), args.repeats)
        return
    print(f"Machine: {machine()}\n")
    print(f"N3 block, gray, k={BLOCK['k']}, {BLOCK['patch_size']}x{BLOCK['patch_size']} patches at stride "
          f"{BLOCK['stride']}, {BLOCK['window']}x{BLOCK['window']} window, embedding 3 x 64 -> 8; "
          f"median of {args.repeats} runs after a warm-up (graph mode).\n")
    print("Time: wall seconds (CPU seconds of the process, both cores together).\n")
    print("| image | tiled time (s) | tiled peak RSS (MB) | all-pairs time (s) | all-pairs peak RSS (MB) |")
    print("|---|---|---|---|---|")
    notes = []
    for size in args.sizes:
        tiled = measure("tiled", size, args.repeats)
        if _all_pairs_gb(size) > ALL_PAIRS_LIMIT_GB:
            pairs = dict(error=f"skipped: needs ~{_all_pairs_gb(size):.0f} GB")
        else:
            pairs = measure("all_pairs", size, args.repeats)
        cells = []
        for r in (tiled, pairs):
            if "error" in r:
                cells += [r["error"], "-"]
            else:
                cells += [f"{r['seconds']:.2f} ({r['cpu_seconds']:.2f})", f"{r['peak_mb']:.0f}"]
        print(f"| {size}x{size} | " + " | ".join(cells) + " |", flush=True)
        if "max_abs_difference" in tiled:
            notes.append(f"{size}x{size}: {tiled['max_abs_difference']:.1e}")
    if notes:
        print("\nTiled vs all-pairs output, max abs difference: " + ", ".join(notes))
    if not args.no_n3net:
        r = measure("n3net", 1024, 1)
        if "error" in r:
            print(f"\nN3Net 1024x1024 gray: {r['error']}")
        else:
            print(f"\nN3Net (defaults) on a 1024x1024 gray image: {r['seconds']:.1f} s "
                  f"({r['cpu_seconds']:.1f} CPU s), "
                  f"peak RSS {r['peak_mb']:.0f} MB (process after building: {r['before_mb']:.0f} MB)")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
