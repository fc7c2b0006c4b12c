"""The continuous kNN relaxation (Ploetz & Roth, NeurIPS 2018) on 1-D data: convergence, numerics, cost.

    python scripts/plot_knn_relaxation.py      # writes docs/figures/knn_relaxation.png, prints the numbers

1. Convergence. N points on a line, `integers` (0..N-1 plus Gaussian noise of std
   `--jitter`) and `uniform` (uniform on [0, N), the same density). Every point is a query,
   the N - 1 others its candidates (squared distances). From the k relaxed neighbour
   distributions w_j of `bfcnn.ops.neural_nearest_neighbors`, the relaxed neighbours are
   `x_j = sum_o w_j[o] x_o`. Against the temperature T: the range inside each neighbourhood
   (`max_j x_j - min_j x_j`, mean over queries; the brute-force kNN's range as reference),
   and the distance to the brute-force kNN, `0.5 * |w_j - onehot(j-th nearest)|_1` (total
   variation, 0 = exact, 1 = disjoint), mean over queries and j. "Converged" is the largest T
   with a mean distance below 1e-2.
2. Numerics. The largest `|sum_o w_j[o] - 1|` and whether anything is NaN, for T from 1e3
   down to 1e-12, below the clamp `exp(LOG_TEMPERATURE_MIN)` ~ 2.1e-9; and whether the
   gradient of `sum_j x_j` with respect to the distances is finite. Beside it, two textbook
   transcriptions of the paper's recursion written here for contrast (not anyone's published
   code): `exp(-d/T) / sum exp(-d/T)` with `log(1 - w)` taken directly ("naive"), and the same
   with the max-subtracted softmax ("stable softmax").
3. Cost. Time and peak memory against N for the op on windows (each query's candidates are
   the `--window` points around it in sorted order, the 1-D analogue of N3's search window;
   queries in chunks, as N3Block does at inference) and on all pairs (an N x N distance
   matrix and W of N x N x k). All-pairs grows until its predicted memory passes `--memory-gb`
   or its measurements pass `--all-pairs-seconds` of CPU; where it stopped is printed. Each
   measurement runs in a fresh process after a warm-up; memory is the peak RSS during the
   call minus the RSS before it (the peak is reset through /proc/self/clear_refs), i.e. what
   the call itself needs beyond TensorFlow and the process.

Needs matplotlib (`pip install 'bfcnn[docs]'`).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_tables import save_figure  # noqa: E402  (same folder)
from bfcnn.io import write_json  # noqa: E402  (atomic; imports no TensorFlow)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CONVERGED = 1e-2
CHUNK = 8192


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200, help="N for the convergence study")
    parser.add_argument("--k", type=int, default=7, help="neighbours (7, as in Ploetz & Roth's denoiser)")
    parser.add_argument("--jitter", type=float, default=0.01, help="std of the noise on the integers")
    parser.add_argument("--window", type=int, default=225,
                        help="windowed candidates: the window-1 points around the query (225: N3's 15x15 default)")
    parser.add_argument("--memory-gb", type=float, default=8.0, help="all-pairs stops before this predicted peak")
    parser.add_argument("--all-pairs-seconds", type=float, default=120.0, help="CPU budget of the all-pairs sweep")
    parser.add_argument("--windowed-sizes", type=int, nargs="+",
                        default=[1000, 4000, 16000, 64000, 256000])
    parser.add_argument("--all-pairs-sizes", type=int, nargs="+",
                        default=[1000, 2000, 4000, 6000, 8000, 11000, 16000, 23000, 32000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-cost", action="store_true", help="only parts 1 and 2")
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures" / "knn_relaxation.png"))
    parser.add_argument("--measure", choices=("windowed", "all_pairs"), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=1000, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def datasets(n, jitter, seed):
    rng = np.random.default_rng(seed)
    return {
        "integers": np.sort(np.arange(n) + jitter * rng.standard_normal(n)),
        "uniform": np.sort(rng.uniform(0.0, n, n)),
    }


def all_candidates(x):
    """Squared distances [N, N-1] of every point to every other, and the candidates' positions."""
    n = len(x)
    others = np.array([np.delete(np.arange(n), i) for i in range(n)])
    positions = x[others]
    return (x[:, None] - positions) ** 2, positions


# ---- 1 and 2: convergence and numerics -------------------------------------------------

def relaxed(distances, positions, temperature, k, method="bfcnn"):
    """(W [N, O, k], relaxed neighbours [N, k], gradient of their sum w.r.t. the distances)."""
    import tensorflow as tf

    d = tf.constant(distances, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(d)
        w = METHODS[method](d, float(temperature), k)
        neighbours = tf.einsum("mok,mo->mk", w, tf.constant(positions, tf.float32))
        total = tf.reduce_sum(neighbours)
    gradient = tape.gradient(total, d)
    return w.numpy(), neighbours.numpy(), gradient.numpy()


def _ours(d, temperature, k):
    from bfcnn.ops import neural_nearest_neighbors

    return neural_nearest_neighbors(d, float(np.log(temperature)), k)


def _textbook(d, temperature, k, stable):
    """The paper's recursion transcribed directly in float32 (for contrast only)."""
    import tensorflow as tf

    alpha, weights = -d, []
    for _ in range(k):
        logits = alpha / temperature
        if stable:
            w = tf.nn.softmax(logits, axis=-1)
        else:
            e = tf.exp(logits)
            w = e / tf.reduce_sum(e, axis=-1, keepdims=True)
        weights.append(w)
        alpha = alpha + tf.math.log(1.0 - w)
    return tf.stack(weights, axis=-1)


METHODS = {
    "bfcnn": _ours,
    "naive": lambda d, t, k: _textbook(d, t, k, stable=False),
    "stable softmax": lambda d, t, k: _textbook(d, t, k, stable=True),
}


def convergence(x, k, temperatures):
    distances, positions = all_candidates(x)
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    truth = np.take_along_axis(positions, order, axis=1)
    onehot = np.zeros(distances.shape + (k,))
    for j in range(k):
        onehot[np.arange(len(x)), order[:, j], j] = 1.0
    out = {"temperature": list(map(float, temperatures)), "range": [], "tv": [], "position_error": [],
           "true_range": float(np.mean(truth.max(1) - truth.min(1)))}
    for t in temperatures:
        w, neighbours, _ = relaxed(distances, positions, t, k)
        out["range"].append(float(np.mean(neighbours.max(1) - neighbours.min(1))))
        out["tv"].append(float(np.mean(0.5 * np.abs(w - onehot).sum(axis=1))))
        out["position_error"].append(float(np.mean(np.abs(neighbours - truth))))
    converged = [t for t, tv in zip(temperatures, out["tv"]) if tv < CONVERGED]
    out["converged_below"] = float(max(converged)) if converged else None
    # The largest T from which every lower T is also converged.
    below = None
    for t, tv in sorted(zip(temperatures, out["tv"])):
        if tv >= CONVERGED:
            break
        below = t
    out["converged_from"] = float(below) if below is not None else None
    return out


def numerics(x, k, temperatures):
    distances, positions = all_candidates(x)
    out = {}
    for method in METHODS:
        rows = {"temperature": list(map(float, temperatures)), "row_sum_error": [], "nan": [], "gradient_finite": [],
                "min_weight": []}
        for t in temperatures:
            w, _, gradient = relaxed(distances, positions, t, k, method)
            sums = w.sum(axis=1)
            rows["nan"].append(bool(np.isnan(w).any()))
            rows["row_sum_error"].append(float(np.nanmax(np.abs(sums - 1.0))) if not np.isnan(sums).all() else None)
            rows["min_weight"].append(float(np.nanmin(w)) if not np.isnan(w).all() else None)
            rows["gradient_finite"].append(bool(np.all(np.isfinite(gradient))))
        out[method] = rows
    return out


# ---- 3: cost ----------------------------------------------------------------------------

def _status_mb(field):
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise OSError(f"no {field} in /proc/self/status")


def reset_peak():
    """Resets the peak RSS to the current RSS (Linux >= 4.0); returns the current RSS in MB.

    Falls back to `getrusage`'s lifetime peak (then a run only shows above earlier peaks).
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return _status_mb("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_mb():
    try:
        return _status_mb("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def windowed_neighbours(x, k, window, log_t):
    """Relaxed neighbours [N, k] with candidates the window - 1 points around each query (sorted x)."""
    import tensorflow as tf

    from bfcnn.ops import neural_nearest_neighbors

    n, half = len(x), window // 2
    size = min(window, n)
    xt = tf.constant(x, tf.float32)
    out = []
    for start in range(0, n, CHUNK):
        queries = np.arange(start, min(start + CHUNK, n))
        first = np.clip(queries - half, 0, n - size)
        index = first[:, None] + np.arange(size)[None]
        index = index[index != queries[:, None]].reshape(len(queries), size - 1)
        candidates = tf.gather(xt, index)
        d = tf.square(candidates - tf.gather(xt, queries)[:, None])
        w = neural_nearest_neighbors(d, log_t, k)
        out.append(tf.einsum("mok,mo->mk", w, candidates))
    return tf.concat(out, axis=0)


def all_pairs_neighbours(x, k, log_t):
    """Relaxed neighbours [N, k] from the full N x N distance matrix (self at +inf)."""
    import tensorflow as tf

    from bfcnn.ops import neural_nearest_neighbors

    xt = tf.constant(x, tf.float32)
    d = tf.square(xt[:, None] - xt[None, :]) + tf.linalg.diag(tf.fill([len(x)], np.float32(np.inf)))
    w = neural_nearest_neighbors(d, log_t, k)
    return tf.einsum("mok,o->mk", w, xt)


def child(args):
    """Measures one method at one N (`--n`) in this fresh process; prints one JSON line."""
    import tensorflow as tf  # noqa: F401

    rng = np.random.default_rng(args.seed)

    def run(x):
        if args.measure == "windowed":
            return windowed_neighbours(x, args.k, args.window, -5.0).numpy()
        return all_pairs_neighbours(x, args.k, -5.0).numpy()

    run(np.sort(rng.uniform(0, 300, 300)))  # warm-up: kernels and allocator
    x = np.sort(rng.uniform(0.0, args.n, args.n))
    before = reset_peak()
    start, start_cpu = time.perf_counter(), _cpu()
    run(x)
    seconds, cpu = time.perf_counter() - start, _cpu() - start_cpu
    print(json.dumps({"n": args.n, "seconds": seconds, "cpu_seconds": cpu, "peak_mb": peak_mb() - before,
                      "process_mb": before}), flush=True)
    return 0


def measure(args, method, n):
    """Runs `child` in a subprocess; its JSON row, or {"n", "stopped"} when it failed."""
    command = [sys.executable, __file__, "--measure", method, "--n", str(n), "--k", str(args.k),
               "--window", str(args.window), "--seed", str(args.seed)]
    done = subprocess.run(command, capture_output=True, text=True)
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode == 0 and rows:
        return rows[0]
    if done.returncode in (-9, 137):
        return {"n": n, "stopped": "killed (out of memory)"}
    last = (done.stderr.strip().splitlines() or ["?"])[-1]
    return {"n": n, "stopped": f"failed: {last}"}


def cost(args):
    """Windowed at every size; all pairs, N ascending, until memory or CPU time would pass the caps."""
    results = {"windowed": [measure(args, "windowed", n) for n in args.windowed_sizes], "all_pairs": []}
    spent, per_n2_mb, per_n2_s, process_mb = 0.0, 0.0, 0.0, 0.0
    for n in args.all_pairs_sizes:
        predicted_gb = (process_mb + per_n2_mb * n * n) / 1024
        predicted_s = per_n2_s * n * n
        if predicted_gb > args.memory_gb:
            results["all_pairs"].append({"n": n, "stopped": f"predicted peak {predicted_gb:.1f} GB "
                                                            f"> {args.memory_gb:g} GB"})
            break
        if spent + predicted_s > args.all_pairs_seconds:
            reason = (f"predicted {predicted_s:.0f} CPU s would pass the {args.all_pairs_seconds:g} s budget "
                      f"({spent:.0f} s spent)")
            results["all_pairs"].append({"n": n, "stopped": reason})
            break
        row = measure(args, "all_pairs", n)
        results["all_pairs"].append(row)
        if "stopped" in row:
            break
        spent += row["cpu_seconds"]
        process_mb = row["process_mb"]
        per_n2_mb = max(per_n2_mb, row["peak_mb"] / (n * n))
        per_n2_s = max(per_n2_s, row["cpu_seconds"] / (n * n))
    return results


def agreement(args):
    """Max |windowed - all-pairs| relaxed neighbour at N = 2000 (uniform data), for a few T."""
    x = np.sort(np.random.default_rng(args.seed).uniform(0.0, 2000, 2000))
    out = {}
    for t in (1e-4, 1e-2, 1.0):
        a = windowed_neighbours(x, args.k, args.window, float(np.log(t))).numpy()
        b = all_pairs_neighbours(x, args.k, float(np.log(t))).numpy()
        out[f"{t:g}"] = float(np.max(np.abs(a - b)))
    return out


# ---- figure ------------------------------------------------------------------------------

def figure(path, conv, nums, costs, args):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13.5, 7.4), dpi=75)
    axes = fig.subplots(2, 3)
    for i, (name, c) in enumerate(conv.items()):
        color = f"C{i}"
        axes[0, 0].plot(c["temperature"], c["range"], color=color, label=f"{name}: relaxed")
        axes[0, 0].axhline(c["true_range"], color=color, linestyle=":", label=f"{name}: brute-force kNN")
        axes[0, 1].plot(c["temperature"], np.maximum(c["tv"], 1e-12), color=color, label=name)
        if c["converged_from"]:
            axes[0, 1].axvline(c["converged_from"], color=color, linestyle=":", alpha=0.7)
    axes[0, 0].set(xscale="log", xlabel="temperature T", ylabel="mean range of the k neighbours",
                   title=f"range inside each neighbourhood (N={args.points}, k={args.k})")
    axes[0, 1].axhline(CONVERGED, color="gray", linestyle="--", linewidth=1)
    axes[0, 1].set(xscale="log", yscale="log", xlabel="temperature T", ylabel="mean total variation",
                   title="distance to brute-force kNN (dotted: converged below)")
    styles = {"bfcnn": "-", "naive": "--", "stable softmax": ":"}
    from bfcnn.ops.nearest_neighbors import LOG_TEMPERATURE_MIN

    for method, rows in nums.items():
        t = np.array(rows["temperature"])
        error = np.array([np.nan if e is None else max(e, 1e-10) for e in rows["row_sum_error"]])
        nan = np.array(rows["nan"])
        line, = axes[0, 2].plot(t, np.where(nan, np.nan, error), styles[method], label=method)
        if nan.any():
            axes[0, 2].plot(t[nan], np.full(nan.sum(), 3.0), "x", color=line.get_color(), label=f"{method}: NaN")
        finite = np.array(rows["gradient_finite"], float)
        axes[1, 2].plot(t, finite + 0.02 * list(METHODS).index(method), styles[method], marker=".", label=method)
    for ax in (axes[0, 2], axes[1, 2]):
        ax.axvline(np.exp(LOG_TEMPERATURE_MIN), color="gray", linestyle="--", linewidth=1)
    axes[0, 2].set(xscale="log", yscale="log", xlabel="temperature T (dashed: clamp)",
                   ylabel="max |sum of w_j - 1| (floor 1e-10)", title="normalisation of every w_j")
    axes[1, 2].set(xscale="log", xlabel="temperature T (dashed: clamp)", ylabel="gradient all finite (1) or not (0)",
                   title="gradient of sum x_j w.r.t. the distances", ylim=(-0.1, 1.2))
    for method, rows in costs.items():
        done = [r for r in rows if "seconds" in r]
        label = "windowed (op on windows)" if method == "windowed" else "all pairs"
        if done:
            n = [r["n"] for r in done]
            axes[1, 0].plot(n, [r["seconds"] for r in done], "o-", label=f"{label}, wall")
            axes[1, 0].plot(n, [r["cpu_seconds"] for r in done], "x:", label=f"{label}, CPU")
            axes[1, 1].plot(n, [max(r["peak_mb"], 1.0) for r in done], "o-", label=label)
        stops = [r for r in rows if "stopped" in r and r["n"]]
        for r in stops:
            axes[1, 1].axvline(r["n"], color="C3", linestyle=":", linewidth=1)
    axes[1, 0].set(xscale="log", yscale="log", xlabel="N points", ylabel="seconds", title="time")
    axes[1, 1].set(xscale="log", yscale="log", xlabel="N points (dotted: all-pairs stopped)",
                   ylabel="peak RSS above warm-up, MB", title="memory")
    for ax in axes.flat:
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)  # whole or not at all


def main(argv=None):
    args = parse_args(argv)
    if args.measure:
        return child(args)
    import matplotlib  # noqa: F401  (fail early without the docs extra)

    data = datasets(args.points, args.jitter, args.seed)
    temperatures = np.logspace(-9, 3, 49)
    print(f"1. convergence: N={args.points}, k={args.k}, integers + N(0, {args.jitter:g}^2) jitter, "
          f"uniform on [0, N); distance = mean total variation to the brute-force kNN")
    conv = {name: convergence(x, args.k, temperatures) for name, x in data.items()}
    print(f"{'T':>9} " + " ".join(f"{name + ' range':>15} {name + ' dist':>14}" for name in conv))
    for i, t in enumerate(temperatures):
        if i % 4 == 0:
            print(f"{t:9.1e} " + " ".join(f"{c['range'][i]:15.3f} {c['tv'][i]:14.2e}" for c in conv.values()))
    for name, c in conv.items():
        print(f"  {name}: brute-force range {c['true_range']:.3f}; distance < {CONVERGED:g} for every "
              f"T <= {c['converged_from']:.1e}" if c["converged_from"] else f"  {name}: never converged")

    low = np.logspace(-12, 3, 31)
    print("\n2. numerics: max |sum_o w_j - 1| (NaN: any NaN weight), gradient finite, for T down to "
          "1e-12 (clamp at 2.1e-9)")
    nums = numerics(data["uniform"], args.k, low)
    print(f"{'T':>9} " + " ".join(f"{m:>22}" for m in nums))
    for i, t in enumerate(low):
        if i % 3 == 0 or i == len(low) - 1:
            cells = []
            for rows in nums.values():
                err = rows["row_sum_error"][i]
                text = "NaN" if rows["nan"][i] else f"{err:.1e}"
                cells.append(f"{text + (' grad ok' if rows['gradient_finite'][i] else ' grad bad'):>22}")
            print(f"{t:9.1e} " + " ".join(cells))
    ours = nums["bfcnn"]
    print(f"  bfcnn: worst row-sum error {max(e for e in ours['row_sum_error'] if e is not None):.1e}, "
          f"NaN at {sum(ours['nan'])} of {len(low)} temperatures, smallest weight {min(ours['min_weight']):.1e}, "
          f"gradient finite at {sum(ours['gradient_finite'])} of {len(low)}")
    for method in ("naive", "stable softmax"):
        rows = nums[method]
        bad = [t for t, n, g in zip(low, rows["nan"], rows["gradient_finite"]) if n or not g]
        print(f"  {method}: NaN weights or non-finite gradient from T = {max(bad):.1e} down" if bad
              else f"  {method}: no failure")

    costs = {}
    if not args.skip_cost:
        print(f"\n3. cost: k={args.k}, windowed = {args.window - 1} candidates per query, chunks of {CHUNK}; "
              f"all pairs = N x N (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
        print("   agreement windowed vs all pairs, N=2000, max |difference| of relaxed neighbours: "
              + ", ".join(f"T={t}: {v:.1e}" for t, v in agreement(args).items()))
        costs = cost(args)
        for method, rows in costs.items():
            for r in rows:
                if "seconds" in r:
                    print(f"   {method:>9} N={r['n']:>8}: {r['seconds']:7.2f} s wall, {r['cpu_seconds']:7.2f} s CPU, "
                          f"peak +{r['peak_mb']:7.0f} MB (process {r['process_mb']:.0f} MB before)")
                else:
                    print(f"   {method:>9} stopped at N={r['n']}: {r['stopped']}")
    out = Path(args.out)
    figure(out, conv, nums, costs, args)
    summary = out.with_suffix(".json")
    write_json(summary, {"convergence": conv, "numerics": nums, "cost": costs,  # atomic, like the figure
                         "settings": {k: v for k, v in vars(args).items() if k != "measure"}})
    print(f"wrote {out} ({out.stat().st_size // 1024} KB) and {summary.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
