"""The benchmark scripts run end to end at a tiny size (their figures are not asserted: docs record them)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def bench(script, *args):
    """Runs benchmarks/<script> with `args` from the repository root; the finished process."""
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.mark.slow
def test_bench_memory_prints_a_row_per_case():
    done = bench("bench_memory.py", "--model", "resnet_gray_s",
                 "--megapixels", "0.05", "--tiles", "128", "--whole-up-to", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| keras") or
            line.startswith("| tflite")]
    assert [(r[0].strip(), r[3].strip()) for r in rows] == [
        ("keras", "whole image"), ("keras", "tiles of 128"), ("tflite", "whole image"), ("tflite", "tiles of 128")]
    for row in rows:
        seconds, loaded, image, peak, above = (float(cell) for cell in row[4:9])
        assert seconds >= 0 and loaded > 0 and peak > 0 and above == pytest.approx(peak - loaded, abs=1)
        assert image == pytest.approx(258 * 194 / 2**20, abs=0.5)  # 0.05 MP at 4:3, one channel


@pytest.mark.slow
def test_bench_inference_prints_a_row_per_engine():
    done = bench("bench_inference.py", "--configs", str(ROOT / "pipelines" / "quickstart.yaml"),
                 "--size", "128", "--runs", "1", "--quantize", "none", "--tiles", "96", "--fixed-tiles", "96",
                 "--bfloat16")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ")][1:]
    assert [r[4].strip() for r in rows] == ["Keras graph", "Keras graph, bfloat16", "TFLite fp32",
                                           "TFLite fp32, tiles of 96", "TFLite fp32, 96x96 file, tiles of 96"]
    for row in rows:
        assert float(row[5]) > 0 and float(row[6]) > 0  # ms and CPU ms per megapixel


@pytest.mark.slow
def test_bench_training_prints_a_row_per_precision():
    done = bench("bench_training.py", "--configs", "pipelines/quickstart.yaml", "--steps", "1", "--rounds", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| quickstart")]
    assert [r[2].strip() for r in rows] == ["float32", "mixed_bfloat16"]
    for row in rows:
        assert float(row[3]) > 0 and float(row[5]) > 0  # steps/s and GFLOP/s
    assert rows[0][6].strip() == "1.00x"


def assert_two_graphs_timed(done, first: str, second: str) -> None:
    """A graph benchmark (benchmarks/graph_timing.py) printed both graphs in both engines, and
    every output is within float rounding of the first: the two graphs are the same map."""
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ") and "ms / MP" not in line]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == [
        (first, "Keras graph"), (first, "TFLite fp32"), (second, "Keras graph"), (second, "TFLite fp32")]
    assert all(float(r[2]) > 0 for r in rows)
    differences = [float(line.rsplit(" ", 1)[1]) for line in done.stderr.splitlines() if "max |difference|" in line]
    assert len(differences) == 4 and max(differences) < 1e-2


@pytest.mark.slow
def test_bench_opponent_fold_times_both_graphs_in_both_engines():
    done = bench("bench_opponent_fold.py", "--model", "resnet_color_s", "--size", "48", "--runs", "1")
    assert_two_graphs_timed(done, "batch of 3 (as shipped)", "3 passes of batch 1")


@pytest.mark.slow
def test_bench_multiscale_crops_times_the_same_weights_with_and_without_crops():
    done = bench("bench_multiscale_crops.py", "--model", "pyramid_gray_m", "--size", "40", "--runs", "1")
    assert_two_graphs_timed(done, "no crops (today)", "crops in expansions and lifts")
    refused = bench("bench_multiscale_crops.py", "--model", "resnet_gray_s", "--size", "16", "--runs", "1")
    assert refused.returncode == 2 and "no Laplacian pyramid" in refused.stderr


def test_bench_multiscale_crops_second_graph_does_crop():
    import bfcnn
    from bfcnn.layers import LaplacianPyramid, PixelShuffle, UpsampleLike
    from conftest import load_script

    model = bfcnn.build_model({"type": "multiscale", "channels": 1, "levels": 3, "filters": 4, "blocks": 1})
    cropped = load_script("benchmarks/bench_multiscale_crops.py").with_crops(model)

    def settings(m):
        return [getattr(layer, "crop", getattr(layer, "exact_halves", None)) for layer in m._flatten_layers()
                if isinstance(layer, (LaplacianPyramid, PixelShuffle, UpsampleLike))]

    assert settings(model) == [True] + [False] * 4 and settings(cropped) == [False] + [True] * 4


def test_bench_opponent_fold_refuses_a_gray_model():
    done = bench("bench_opponent_fold.py", "--model", "resnet_gray_s", "--size", "16", "--runs", "1")
    assert done.returncode == 2 and "not an opponent model" in done.stderr


@pytest.mark.slow
def test_bench_tiling_prints_a_row_per_case():
    done = bench("bench_tiling.py", "--model", "resnet_gray_s", "--size", "64", "--cases", "32,8", "40,16,4")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ") and "tile" not in line]
    assert [tuple(int(c) for c in r[:3]) for r in rows] == [(32, 8, 2), (40, 16, 4)]
    for row in rows:
        changes = [float(v) for v in row[3].split("/")]
        differences = [float(v) for v in row[4].split("/")]
        assert len(changes) == len(differences) == 2  # camera and moon
        assert all(abs(c) < 1 for c in changes) and all(0 <= d < 50 for d in differences)


@pytest.mark.parametrize("case, rule", [("128", "TILE,OVERLAP or TILE,OVERLAP,MARGIN"),
                                        ("32,32", "TILE must be at least twice OVERLAP"),
                                        ("16,32,4", "TILE must be at least twice OVERLAP"),
                                        ("128,96,40", "TILE must be at least twice OVERLAP"),
                                        ("64,16,8", "MARGIN must satisfy 2 * MARGIN < OVERLAP"),
                                        ("64,16,9", "MARGIN must satisfy 2 * MARGIN < OVERLAP"),
                                        ("64,-1", "must be >= 0")])
def test_bench_tiling_refuses_a_malformed_case(case, rule):
    done = bench("bench_tiling.py", "--cases", case)
    assert done.returncode == 2 and rule in done.stderr and "Traceback" not in done.stderr


def test_bench_tiling_parse_case_accepts_what_tiled_apply_accepts(monkeypatch):
    import importlib.util

    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts the repository root first
    spec = importlib.util.spec_from_file_location("bench_tiling_under_test", ROOT / "benchmarks" / "bench_tiling.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    DEFAULT_CASES, parse_case = script.DEFAULT_CASES, script.parse_case
    assert parse_case("64,16") == (64, 16, None) and parse_case("64,16,7") == (64, 16, 7)
    assert parse_case("64,0,0") == (64, 0, 0)  # no overlap, no margin: plain tiles
    assert all(parse_case(case) for case in DEFAULT_CASES)
    import numpy as np

    from bfcnn.tiling import tiled_apply

    image = np.zeros((300, 300, 1), np.float32)
    for case in DEFAULT_CASES:  # each default case runs as it is
        tile, overlap, margin = parse_case(case)
        assert tiled_apply(lambda t: t, image, tile, overlap, margin).shape == image.shape


def load_bench(name, monkeypatch):
    """benchmarks/<name> imported as a module (it puts the repository root first on sys.path)."""
    import importlib.util

    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = importlib.util.spec_from_file_location(f"{Path(name).stem}_under_test", ROOT / "benchmarks" / name)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_bench_inference_removes_its_tflite_folder(tmp_path, monkeypatch):
    import tempfile

    script = load_bench("bench_inference.py", monkeypatch)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = script.bench_config(str(ROOT / "pipelines" / "quickstart.yaml"), 32, 1, 1, ["none"], None)
    assert [row["engine"] for row in result["rows"]] == ["Keras graph", "TFLite fp32"]
    assert result["rows"][1]["bytes"] > 0
    assert list(tmp_path.glob("bench-tflite-*")) == []  # (TensorFlow leaves autograph .py files there)


def test_make_bench_runs_the_zoos_pipelines_only():
    """`make bench` (no arguments) times the five zoo models' pipelines, not all of pipelines/."""
    done = subprocess.run(["make", "-n", "bench", "STAMP=", "PY=python"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    words = done.stdout.split()
    configs = words[words.index("--configs") + 1:]
    configs = configs[:next(i for i, w in enumerate(configs) if w.startswith("--"))]
    zoo = sorted(p.stem for p in (ROOT / "pretrained").glob("*.json"))
    assert sorted(Path(c).stem for c in configs) == zoo and all((ROOT / c).is_file() for c in configs)
    help_text = subprocess.run(["make", "-s", "help"], capture_output=True, text=True, cwd=ROOT, timeout=60).stdout
    assert "bench" in help_text and "zoo" in help_text


@pytest.mark.parametrize("script, args, message", [
    ("bench_bm3d_speed.py", ["--baselines", "foo"], "unknown baseline 'foo'; available: 'bm3d', 'nlm'"),
    ("bench_bm3d_speed.py", ["--baselines", "nlm", "--model", "nosuch"], "unknown model 'nosuch'; available: "),
    ("bench_bm3d_speed.py", ["--sizes", "0"], "argument --sizes: must be an integer >= 1, got 0"),
    ("bench_bm3d_speed.py", ["--repeats", "0"], "argument --repeats: must be an integer >= 1, got 0"),
    ("bench_tiling.py", ["--model", "nosuch"], "error: --model: unknown model 'nosuch'; available: "),
])
def test_a_benchmark_given_bad_arguments_says_so_in_one_line(script, args, message):
    done = bench(script, *args)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_bench_bm3d_speed_writes_its_json_whole(tmp_path):
    import json

    out = tmp_path / "speed.json"
    done = bench("bench_bm3d_speed.py", "--baselines", "nlm", "--sizes", "16", "--repeats", "1", "--json", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["method"], r["size"]) for r in rows] == [("nlm", 16)] and rows[0]["seconds"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["speed.json"]


@pytest.mark.parametrize("script", ["bench_inference.py", "bench_memory.py"])
def test_tile_sizes_under_twice_the_overlap_are_refused_up_front(script):
    done = bench(script, "--tiles", "64")
    assert done.returncode == 2 and "must be at least 96 (twice the tile overlap, 48), got 64" in done.stderr


def test_bench_cache_memory_prints_both_ways_of_building_the_store():
    done = bench("bench_cache_memory.py", "--images", "3", "--size", "64")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| True") or
            line.startswith("| False")]
    assert [row[0].strip() for row in rows] == ["False", "True"]
    assert all(row[1].strip() == "0 MiB" and row[3].strip().endswith("x") for row in rows)  # 3 x 64 x 64 x 3 bytes
    assert bench("bench_cache_memory.py", "--images", "0").returncode == 2


@pytest.mark.slow
def test_bench_litert_kernels_runs_each_file_both_ways_with_the_same_output():
    done = bench("bench_litert_kernels.py", "--models", "resnet_gray_s", "--size", "32", "--runs", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| resnet_gray_s")]
    assert [r[1].strip() for r in rows] == ["XNNPACK delegate", "builtin kernels"]
    assert rows[0][3].strip() == "1.00" and float(rows[1][3]) > 0
    assert float(rows[1][4]) < 0.01  # the same network: only float rounding apart, on the 0-255 scale


def test_bench_litert_kernels_names_the_known_models_for_an_unknown_one():
    done = bench("bench_litert_kernels.py", "--models", "resnet_grey_s", "--size", "32", "--runs", "1")
    assert done.returncode == 2 and "resnet_grey_s" in done.stderr and "resnet_gray_s" in done.stderr


def test_bench_n3_parts_cuts_the_n3net_where_its_stages_meet(monkeypatch):
    import numpy as np

    import bfcnn

    script = load_bench("bench_n3_parts.py", monkeypatch)
    model = bfcnn.load_model("n3net_gray")
    models = script.parts(model)
    image = np.random.default_rng(0).uniform(0, 255, (1, 40, 40, 1)).astype(np.float32)
    inputs = script.part_inputs(models, image)
    second = np.asarray(models["second stage (convolutions)"](inputs["second stage (convolutions)"]))
    # the parts make the whole: the model's estimate is the N3 block's input plus the second stage's output
    np.testing.assert_allclose(255.0 * (inputs["N3 block"] + second), np.asarray(model(image)), atol=1e-3)
    with pytest.raises(ValueError, match="not an N3Net of 2 stages"):
        script.parts(bfcnn.load_model("resnet_gray_s"))


def test_bench_n3_parts_prints_a_row_per_part():
    done = bench("bench_n3_parts.py", "--size", "24", "--runs", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split("|")[1].strip() for line in done.stdout.splitlines() if line.startswith("| ")][1:]
    assert rows == ["first stage (convolutions)", "N3 block", "second stage (convolutions)", "whole model",
                    "sum of the three parts"]
    done = bench("bench_n3_parts.py", "--model", "resnet_gray_s", "--size", "24", "--runs", "1")
    assert done.returncode == 2 and "is not an N3Net of 2 stages" in done.stderr and "Traceback" not in done.stderr
