"""Peak memory of building the trainer's in-memory image store (`InMemorySampler`), as a table.

Each case runs in a fresh process: random uint8 images are made (the "decoded" dataset), then
the sampler is built from them, with `release=True` (how the trainer builds it: each decoded
image is let go once copied) and without. The table gives the peak resident memory above the
process that already holds the images, in multiples of the dataset's size.

    python benchmarks/bench_cache_memory.py                 # 130 images of 1000 x 1000 x 3 (372 MiB)
    python benchmarks/bench_cache_memory.py --images 40 --size 512
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout
from bfcnn.cli import positive_int  # noqa: E402  (imports no TensorFlow)

CHILD = """
import json, resource, sys
import numpy as np
from bfcnn.training.sampler import InMemorySampler
count, size, release = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
images = [np.random.default_rng(k).integers(0, 256, (size, size, 3), dtype=np.uint8) for k in range(count)]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
sampler = InMemorySampler(images, [1.0] * count, patch_size=64, **({"release": True} if release else {}))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"dataset": sampler.nbytes, "above": peak - before}))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=positive_int, default=130, help="how many images (default 130)")
    parser.add_argument("--size", type=positive_int, default=1000, help="their side in pixels, RGB (default 1000)")
    args = parser.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    print(f"{args.images} random RGB images of {args.size} x {args.size}; peak resident memory while building "
          "the store, above the process holding the decoded images\n")
    print("| release | dataset | peak above | in datasets |")
    print("|---|---:|---:|---:|")
    for release in (False, True):
        run = subprocess.run([sys.executable, "-c", CHILD, str(args.images), str(args.size), str(int(release))],
                             capture_output=True, text=True, env=env)
        if run.returncode != 0:
            print(f"error: the measuring process failed:\n{run.stderr[-2000:]}", file=sys.stderr)
            return 1
        result = json.loads(run.stdout.strip().splitlines()[-1])
        print(f"| {release} | {result['dataset'] / 2**20:.0f} MiB | {result['above'] / 2**20:.0f} MiB | "
              f"{result['above'] / result['dataset']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
