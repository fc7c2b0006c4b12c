"""Turns a training run into a zoo entry: weights, TFLite file and a measured model card.

    python scripts/make_zoo_entry.py --run runs/pyramid_gray_m --name pyramid_gray_m \
        --description "..." [--baseline bm3d]
    python scripts/make_zoo_entry.py --refresh pyramid_gray_m [resnet_gray_s ...]

The latest checkpoint of the run (not the best-by-validation one, so the validation set
does not pick the weights), or with `--average N` the mean of its last N checkpoints
(`bfcnn.training.averaging`), is loaded into a float32 model and written to
`pretrained/<name>.keras` and `pretrained/<name>.tflite`. The card records the
architecture, the training run (steps and wall time summed over resumed sessions), the
validation table measured here with `bfcnn.evaluation` on the full validation images
(BM3D side by side on the same noisy images), inference speed, and sha256 of each file.
Every number in the card comes from this script.

`--refresh NAME...` keeps an entry's weights and validation table: it converts the shipped
`.keras` to TFLite again (after a change to the converter or to a layer's graph), counts the
FLOPs per pixel and measures the speed again (on an idle machine, for figures worth quoting) and updates the sha256 of
each file. The card records how far the refreshed TFLite file is from the Keras model on the noisy
photograph export verification uses (a warning above export's fp32 limit, `bfcnn.export.fp32_tolerance`,
an error above `BROKEN_CONVERSION`).
"""

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAPERS = {
    "multiscale": "Mohan et al., Robust and interpretable blind image denoising via bias-free CNNs, ICLR 2020; "
                  "Burt & Adelson, The Laplacian pyramid as a compact image code, 1983",
    "resnet": "Mohan et al., ICLR 2020; Zhang et al., Beyond a Gaussian denoiser (DnCNN), TIP 2017",
    "n3net": "Ploetz & Roth, Neural Nearest Neighbors Networks, NeurIPS 2018; Mohan et al., ICLR 2020",
    "opponent": "Dabov et al., Color image denoising via sparse 3D collaborative filtering with grouping "
                "constraint in luminance-chrominance space, ICIP 2007",
}


def paper_of(model_config: dict) -> str:
    """The papers behind a model config; an opponent model's also those of its gray network."""
    paper = PAPERS.get(model_config["type"], "")
    inner = model_config.get("inner")
    if model_config["type"] == "opponent" and isinstance(inner, dict):
        paper = "; ".join(p for p in (paper, PAPERS.get(inner.get("type", "multiscale"), "")) if p)
    return paper


BROKEN_CONVERSION = 0.1  # max |TFLite - Keras| on 0-255 above which a refresh stops


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="the training run's model directory")
    parser.add_argument("--name", help="the zoo name")
    parser.add_argument("--description")
    parser.add_argument("--refresh", nargs="+", metavar="NAME", help="re-export and re-time these entries only")
    parser.add_argument("--baseline", nargs="*", default=["bm3d"], help="baselines run side by side")
    parser.add_argument("--sigmas", nargs="+", type=float, default=[15.0, 25.0, 50.0])
    parser.add_argument("--max-images", type=int, default=None, help="evaluate on the first N images only")
    parser.add_argument("--average", type=int, default=None, metavar="N",
                        help="ship the mean weights of the run's last N checkpoints instead of the latest")
    parser.add_argument("--zoo", default=str(ROOT / "pretrained"))
    parser.add_argument("--baselines-only", action="store_true", help="only fill the baseline cache")
    parser.add_argument("--baselines-from", nargs="+", metavar="FILE", default=[],
                        help="`bfcnn.evaluate --out` files of the same validation images (seed 0) whose "
                             "baseline rows fill the cache instead of running the baselines again, e.g. "
                             "benchmarks/baselines/McMaster18.json")
    parser.add_argument("--machine", default="2-core x86-64 CPU (AVX512_BF16), no GPU, TensorFlow 2.21")
    args = parser.parse_args(argv)
    if not args.refresh and not (args.run and args.name and args.description):
        parser.error("--run, --name and --description are required (or --refresh NAME ...)")
    return args


def todays_graph(model, architecture):
    """`model` as today's builder makes it, with the same weights (`copy_legacy_weights`, by layer
    name): rebuilt from `architecture` when today's graph has other kinds of layers or layers set
    otherwise, e.g. a multiscale model saved with transposed-convolution lifts, before it mirrored
    other sizes up to a multiple of its levels (`ReflectToMultiple`), or before its expansions
    skipped their crops (`exact_halves`). Returns `model` itself when nothing changed."""
    import keras

    from bfcnn.models.builder import build_model
    from bfcnn.models.multiscale import copy_legacy_weights

    def kinds(m):
        def settings(layer):
            try:  # a nested model's layers are compared one by one; its config names them as built
                config = {} if isinstance(layer, keras.Model) else layer.get_config()
            except NotImplementedError:  # Keras's inner layers built with objects (an Identity)
                config = {}
            config = {k: v for k, v in config.items() if k not in ("name", "dtype", "trainable")}
            return json.dumps([type(layer).__name__, config], sort_keys=True, default=str)

        return sorted(settings(layer) for layer in m._flatten_layers(include_self=False))

    if architecture is None:  # an entry without its architecture cannot be rebuilt
        return model
    rebuilt = build_model(architecture)
    if kinds(rebuilt) == kinds(model):
        return model
    return copy_legacy_weights(rebuilt, model)


def checkpoint_clock(checkpoint) -> tuple:
    """The step and elapsed seconds a training checkpoint stores (nothing else is read)."""
    import tensorflow as tf

    step = tf.Variable(0, dtype=tf.int64)
    elapsed = tf.Variable(0.0, dtype=tf.float64)
    tf.train.Checkpoint(step=step, elapsed=elapsed).restore(str(checkpoint)).expect_partial()
    return int(step.numpy()), float(elapsed.numpy())


def restore_latest(run: Path, config):
    """A float32 model with the run's latest checkpoint, plus its step and elapsed seconds.

    A run trained before the multiscale lifts changed form has checkpoints today's graph
    cannot read: its final `model.keras` (written with the last checkpoint) is converted.
    """
    import keras
    import tensorflow as tf

    from bfcnn.models.builder import build_model

    keras.mixed_precision.set_global_policy("float32")
    model = build_model(config.model)
    latest = tf.train.latest_checkpoint(str(run / "checkpoints"))
    if latest is None:
        raise SystemExit(f"no checkpoint in {run / 'checkpoints'}")
    try:
        # (The optimizer's state is in the checkpoint too, and not needed: only the model must match.)
        tf.train.Checkpoint(model=model).restore(latest).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError):
        final = run / "model.keras"
        if not final.exists():
            raise SystemExit(f"error: {latest} does not fit today's {config.model['type']} graph, and "
                             f"{final} (to convert) is missing") from None
        model = todays_graph(keras.models.load_model(final), config.model)
    return (model, *checkpoint_clock(latest), latest)


def restore(run: Path, config, average=None):
    """`restore_latest`, or with `average` the mean weights of the run's last `average`
    checkpoints (`bfcnn.training.averaging`); steps and time are the latest checkpoint's either way.

    Returns:
        (model, steps, seconds, what the card's `checkpoint` says the weights are)
    """
    if not average:
        model, steps, seconds, latest = restore_latest(run, config)
        return model, steps, seconds, Path(latest).name
    from bfcnn.errors import ConfigError
    from bfcnn.training.averaging import average_checkpoints, list_checkpoints

    try:
        model, averaged = average_checkpoints(run, average)
    except ConfigError as error:
        raise SystemExit(f"error: --average: {error}") from None
    steps, seconds = checkpoint_clock(list_checkpoints(run)[-1][1])
    return model, steps, seconds, f"mean of {len(averaged)} checkpoints, ckpt-{averaged[0]} to ckpt-{averaged[-1]}"


def evaluate_command(name, directory, sigmas, baselines, max_images=None) -> str:
    """The `bfcnn.evaluate` command that measures the card's validation table again."""
    command = (f"python -m bfcnn.evaluate --model {name} --dataset {directory} "
               f"--sigma {' '.join(f'{s:g}' for s in sigmas)}")
    if baselines:
        command += f" --baseline {' '.join(baselines)}"
    if max_images:
        command += f" --max-images {max_images}"
    return command


def previous_time(zoo: Path, init_from, _seen=()) -> tuple:
    """Steps and seconds of the training this run was warm-started from (`train.init_from`).

    Either a zoo entry, `<zoo>/<entry>.keras` (read off `<entry>.json`; an entry started from
    another one, such as the opponent color model from the gray flagship, counts that one's
    training too, and its description says which), or the `model.keras` of another run
    directory (its `summary.json`, plus whatever that run started from in turn). Any other
    start counts (0, 0.0).
    """
    if not init_from:
        return 0, 0.0
    path = Path(init_from)
    card_path = zoo / f"{path.stem}.json"
    if path.resolve().parent == zoo.resolve() and card_path.exists():
        card = json.loads(card_path.read_text())
        return card["training"]["steps"], card["training"]["wall_time_seconds"]
    run = path.resolve().parent
    if path.name == "model.keras" and (run / "summary.json").exists() and (run / "config.yaml").exists():
        if run in _seen:
            raise SystemExit(f"error: train.init_from loops back to {run}")
        from bfcnn.config import config_to_dict, load_config

        config = load_config(run / "config.yaml")
        shipped = card_of_run(zoo, config_to_dict(config))
        if shipped is not None:
            # That run is a zoo entry already, whose card counts it and all it started from;
            # going on down the chain would meet that entry's file, rewritten since, and count twice.
            return shipped["training"]["steps"], shipped["training"]["wall_time_seconds"]
        summary = json.loads((run / "summary.json").read_text())
        steps, seconds = start_time(run, zoo, config.train.init_from, (*_seen, run))
        return steps + int(summary["steps"]), seconds + float(summary["elapsed_seconds"])
    return 0, 0.0


def start_time(run, zoo: Path, init_from, _seen=()) -> tuple:
    """What run directory `run` started from, in steps and seconds: the card figures the trainer
    recorded in `<run>/init_from.json` when it started from a file with a model card (a zoo
    entry, perhaps shipped again since, so its card counts other training now), otherwise
    `previous_time` of its `train.init_from`.
    """
    record = Path(run) / "init_from.json" if run is not None else None
    card = json.loads(record.read_text()).get("card") if record is not None and record.exists() else None
    if card is not None:
        return int(card["steps"]), float(card["wall_time_seconds"])
    return previous_time(zoo, init_from, _seen)


def training_totals(zoo: Path, name: str, config: dict, init_from, steps: int, seconds: float,
                    checkpoint: str, run=None) -> tuple:
    """Total steps and seconds of a run shipped as `name`: what it started from, plus its own.

    Shipping again the run that entry `name` holds (a new card for the same training) keeps
    the card's count of what came before: the run's chain of starts would otherwise reach the
    entry's own file, whose card counts this run already. `config` is the run's resolved
    config (`config_to_dict`), `checkpoint` the checkpoint shipped, `run` its directory (for
    its `init_from.json`, `start_time`).
    """
    card_path = zoo / f"{name}.json"
    old = json.loads(card_path.read_text()).get("training", {}) if card_path.exists() else {}
    if old and old.get("config") == config:
        if "run_steps" in old:
            return old["steps"] - old["run_steps"] + steps, old["wall_time_seconds"] - old["run_seconds"] + seconds
        if old.get("checkpoint") == checkpoint:  # a card from before run_steps: the same weights
            return old["steps"], old["wall_time_seconds"]
        raise SystemExit(f"error: {card_path} holds this run at {old.get('checkpoint')}, now {checkpoint}, and "
                         "does not say how many of its steps were this run's; edit its training.steps by hand")
    before_steps, before_seconds = start_time(run, zoo, init_from)
    return before_steps + steps, before_seconds + seconds


def card_of_run(zoo: Path, config: dict):
    """The zoo card made from a run of this exact resolved config (`training.config`), if any."""
    for card_path in sorted(zoo.glob("*.json")):
        card = json.loads(card_path.read_text())
        if card.get("training", {}).get("config") == config:
            return card
    return None


def speed(model, channels: int, tflite_path: Path) -> dict:
    """Median milliseconds per megapixel on a 512 x 512 image: Keras graph mode and TFLite fp32."""
    import tensorflow as tf

    image = np.random.default_rng(0).uniform(0, 255, (512, 512, channels)).astype(np.float32)
    infer = tf.function(lambda x: model(x, training=False),
                        input_signature=[tf.TensorSpec([1, None, None, channels], tf.float32)])
    out = {}
    for label, run in [("keras_ms_per_megapixel", lambda: infer(image[None]).numpy())]:
        run()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        out[label] = 1000 * statistics.median(times) / (512 * 512 / 1e6)
    try:
        from bfcnn.lite import TFLiteDenoiser

        lite = TFLiteDenoiser(str(tflite_path))
        lite(image)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            lite(image)
            times.append(time.perf_counter() - start)
        out["tflite_fp32_ms_per_megapixel"] = 1000 * statistics.median(times) / (512 * 512 / 1e6)
    except ImportError:
        pass
    # Other jobs on the machine slow these figures down; the card says how busy it was.
    out["load_average_1min"] = round(os.getloadavg()[0], 2)
    out["image"] = "512x512, median of 5 runs after warm-up"
    return out


def evaluate(denoisers, images, sigmas) -> dict:
    """{sigma: {name: {psnr, ssim, seconds_per_image}, "noisy": {...}}} by the evaluation protocol."""
    from bfcnn.evaluation import evaluate_denoisers

    results = evaluate_denoisers(denoisers, images, sigmas, seed=0, metrics=("psnr", "ssim"))
    return {f"{sigma:g}": {name: {k: v for k, v in row.items() if k != "per_image"} for name, row in rows.items()}
            for sigma, rows in results.items()}


def borrowed_baselines(files, dataset: str, color: str, names) -> dict:
    """{sigma: rows} from `bfcnn.evaluate --out` files of the same validation images.

    The noise depends on the seed, the image and sigma only, so a baseline's PSNR and SSIM
    from another evaluation of the same images with seed 0 are what it would score here.

    Args:
        files: the `--out` JSON files.
        dataset, color, names: the run's validation folder name, color and image names
            (relative to the folder, sorted, as `bfcnn.evaluate` lists them).

    Raises:
        SystemExit: a file that cannot be read, or of other images, metric or seed.
    """
    rows = {}
    for file in files:
        try:
            document = json.loads(Path(file).read_text())
            found = {"dataset": Path(document["dataset"]).name, "color": document["color"],
                     "metric": document["metric"], "seed": document["seed"], "images": document["images"]}
            results = document["results"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise SystemExit(f"--baselines-from {file}: not a readable `bfcnn.evaluate --out` file ({error!r})")
        wanted = {"dataset": dataset, "color": color, "metric": "psnr", "seed": 0, "images": list(names)}
        different = [key for key in wanted if found[key] != wanted[key]]
        if different:
            key = different[0]
            shown = (lambda v: f"{len(v)} images" if key == "images" else repr(v))
            raise SystemExit(f"--baselines-from {file}: its {key} is {shown(found[key])}, the run's is "
                             f"{shown(wanted[key])} (only an evaluation of the same images, with --metric psnr "
                             "and seed 0, has the same noisy images)")
        for sigma, entry in results.items():
            rows.setdefault(f"{float(sigma):g}", {}).update(entry)
    return rows


def validation_names(config, max_images=None):
    """The run's validation files and their names relative to the folder, as `bfcnn.evaluate` gives them."""
    from bfcnn.io import list_images, resolve_directory

    root = resolve_directory(config.validation.directory)
    files = list_images(config.validation.directory)[:max_images]
    return files, [str(f.relative_to(root)) if f.is_relative_to(root) else str(f) for f in files]


def baseline_table(args, config, images, borrowed=None) -> dict:
    """{baseline: {sigma: scores}} on the run's validation images, cached under runs/baseline_cache.

    Baselines see the same noisy images as the model (the noise depends on seed, image
    and sigma only), so caching them is exact; BM3D takes minutes per dataset.
    """
    from bfcnn.baselines import get_baseline
    from bfcnn.evaluate import write_json

    tables = {}
    borrowed = borrowed or {}
    for name in args.baseline:
        key = f"{Path(config.validation.directory).name}_{config.dataset.color}_{len(images)}_{name}"
        cache = ROOT / "runs" / "baseline_cache" / f"{key}.json"
        cached = json.loads(cache.read_text()) if cache.exists() else {}
        before = dict(cached)
        for sigma, rows in borrowed.items():
            if sigma not in cached and name in rows:
                cached[sigma] = {k: v for k, v in rows[name].items() if k != "per_image"}
        missing = [s for s in args.sigmas if f"{s:g}" not in cached]
        if missing:
            cached.update({k: v[name] for k, v in evaluate({name: get_baseline(name)}, images, missing).items()})
        if cached != before:
            write_json(cache, cached)
        tables[name] = cached
    return tables


def file_entries(keras_path: Path, tflite_path: Path, names=None, lifted: Optional[Path] = None) -> dict:
    """The card's `files`: name, sha256 and size of each file; `names` {kind: file name} when the
    files still lie under temporary names (the card names the files they become). `lifted`: a
    color model's `<name>_lifted.tflite` (kind `tflite_lifted`), which `TFLiteDenoiser` loads
    beside the TFLite file and `bfcnn.zoo.model_file(name, "tflite")` checks with it."""
    from bfcnn.zoo import sha256

    names = names or {}
    paths = [("keras", keras_path), ("tflite", tflite_path)] + ([("tflite_lifted", lifted)] if lifted else [])
    return {kind: {"path": names.get(kind, path.name), "sha256": sha256(path), "bytes": path.stat().st_size}
            for kind, path in paths}


def same_model_file(model, keras_path: Path) -> bool:
    """Whether `keras_path` already holds `model`: the same config and bit-identical weights.

    Saving writes a new file each time (the archive records object ids), so a card written
    again for the same weights keeps the old file rather than adding a copy to the history.
    """
    import keras
    import numpy as np

    import bfcnn.models  # noqa: F401  (registers the layers the file names)

    if not keras_path.exists():
        return False
    try:
        existing = keras.models.load_model(keras_path, compile=False)
    except Exception:  # an unreadable file is replaced
        return False
    def plain(config):  # tuples and lists alike, as in the file
        return json.loads(json.dumps(config, default=str))

    old, new = existing.get_weights(), model.get_weights()
    return (plain(existing.get_config()) == plain(model.get_config()) and len(old) == len(new)
            and all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(old, new)))


def write_tflite(model, tflite_path: Path) -> None:
    from bfcnn.export import to_tflite

    tmp = tflite_path.with_name(tflite_path.name + ".tmp")
    tmp.write_bytes(to_tflite(model))
    os.replace(tmp, tflite_path)
    write_lifted_tflite(model, tflite_path)


def lifted_path(tflite_path: Path) -> Path:
    """`<name>_lifted.tflite` beside `<name>.tflite`, where `bfcnn.lite.TFLiteDenoiser` looks for it."""
    from bfcnn.export.tflite import LIFTED_SUFFIX

    return tflite_path.with_name(tflite_path.stem + LIFTED_SUFFIX + ".tflite")


def lifted_bytes(model):
    """For a color (opponent) model, the TFLite file of its networks without the image-wide lift,
    which `TFLiteDenoiser` runs tiles through (`bfcnn.export.tflite.lifted_tflite`, checked
    against Keras); None for other models."""
    from bfcnn.export.tflite import lifted_tflite

    lifted = lifted_tflite(model)
    if lifted is None:
        return None
    print(f"the networks without the lift in TFLite: max |diff| from Keras "
          f"{lifted[1].get('max_abs_difference', float('nan')):.1e}")
    return lifted[0]


def write_lifted_tflite(model, tflite_path: Path) -> None:
    """`lifted_bytes(model)` written (atomically) to `lifted_path(tflite_path)`; nothing for a gray model."""
    data = lifted_bytes(model)
    if data is not None:
        path = lifted_path(tflite_path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)


def write_card(card_path: Path, card: dict) -> None:
    from bfcnn.evaluate import write_json  # atomic

    write_json(card_path, card)


def refresh(names, zoo: Path) -> int:
    """New TFLite file, speed and sha256 for existing entries; weights and validation unchanged."""
    import bfcnn
    from bfcnn.export import fp32_tolerance, sample_image
    from bfcnn.lite import TFLiteDenoiser
    from bfcnn.models.cost import flops_per_pixel
    from bfcnn.models.shift import shift_period
    from bfcnn.training.run_directory import atomic_save_model

    for name in names:
        card_path = zoo / f"{name}.json"
        if not card_path.exists():
            raise SystemExit(f"error: no card {card_path}")
        card = json.loads(card_path.read_text())
        keras_path = zoo / f"{name}.keras"
        model = bfcnn.load_model(str(keras_path))
        channels = card["channels"]
        _, probe = sample_image(channels)  # the photograph export verification uses
        probe = probe[None]
        upgraded = todays_graph(model, card.get("architecture"))
        if upgraded is not model:
            # the same function where the graphs are meant to agree: sizes a multiple of 2^3
            # (today's multiscale models mirror other sizes up to a multiple of their levels)
            same = probe[:, : probe.shape[1] // 8 * 8, : probe.shape[2] // 8 * 8]
            change = float(np.abs(upgraded(same, training=False).numpy() - model(same, training=False).numpy()).max())
            if change > 1e-3:
                raise SystemExit(f"error: {name}: today's graph differs from the saved one by {change:.2e}")
            print(f"{name}: rebuilt with today's graph (output change {change:.1e}); weights re-saved")
            atomic_save_model(upgraded, keras_path)
            model = upgraded
        tflite_path = zoo / f"{name}.tflite"
        write_tflite(model, tflite_path)
        keras_out = model(probe, training=False).numpy()
        difference = float(np.abs(TFLiteDenoiser(str(tflite_path))(probe) - keras_out).max())
        if difference > BROKEN_CONVERSION:
            raise SystemExit(f"error: {name}: TFLite differs from Keras by {difference:.2e} on 0-255: "
                             "the conversion is broken")
        tolerance, sensitivity = fp32_tolerance(model, probe, reference=keras_out)
        if difference > tolerance:
            print(f"warning: {name}: TFLite differs from Keras by {difference:.2e} on 0-255, above export "
                  f"verification's {tolerance:.2g} (recorded in the card)")
        card["tflite_vs_keras"] = {"max_abs_difference": difference, "tolerance": tolerance,
                                   "keras_float32_sensitivity": sensitivity,
                                   "image": "bfcnn.export.sample_image (noisy photograph, sigma 25)"}
        card["flops_per_pixel"] = flops_per_pixel(model)  # counted again: the count may have been fixed since
        card["shift_period"] = shift_period(model)  # where TFLiteDenoiser's tiles may start (bfcnn.models.shift)
        card["speed"] = speed(model, channels, tflite_path)
        lifted = lifted_path(tflite_path)
        card["files"] = file_entries(keras_path, tflite_path, lifted=lifted if lifted.exists() else None)
        write_card(card_path, card)
        print(f"{name}: TFLite vs Keras max |diff| {difference:.1e}; keras "
              f"{card['speed']['keras_ms_per_megapixel']:.0f} ms/MP, tflite "
              f"{card['speed'].get('tflite_fp32_ms_per_megapixel', float('nan')):.0f} ms/MP "
              f"(load {card['speed']['load_average_1min']})")
    return 0


def card_of(args, config, model, steps: int, seconds: float, checkpoint: str, totals: tuple, images: int,
            table: dict, speeds: dict, files: dict) -> dict:
    """The model card of a new entry, from what `ship` measured."""
    from bfcnn.config import config_to_dict
    from bfcnn.models.cost import describe
    from bfcnn.models.shift import shift_period

    channels = config.model.get("channels", 1)
    cost = describe(model)
    return {
        "name": args.name,
        "description": args.description,
        "architecture": config.model,
        "channels": channels,
        "bias_free": cost["bias_free"],
        "parameters": cost["parameters"],
        "flops_per_pixel": cost["flops_per_pixel"],
        "shift_period": shift_period(model),
        "input": {"name": model.inputs[0].name, "dtype": "float32", "shape": [None, None, None, channels],
                  "value_range": [0, 255]},
        "training": {
            "data": [s.directory or str(s) for s in config.dataset.inputs],
            "noise": config_to_dict(config)["corruption"],
            "steps": totals[0],
            "wall_time_seconds": round(totals[1], 1),
            "run_steps": steps,
            "run_seconds": round(seconds, 1),
            "checkpoint": checkpoint,
            "machine": args.machine,
            "precision": config.train.precision,
            "config": config_to_dict(config),
        },
        "validation": {
            "dataset": Path(config.validation.directory).name,
            "images": images,
            "protocol": "datasets/README.md: noise not clipped or rounded, output clipped and rounded, "
                        "PSNR on uint8, mean over images, seed 0",
            "command": evaluate_command(args.name, config.validation.directory, args.sigmas, args.baseline,
                                        args.max_images),
            "results": table,
        },
        "speed": speeds,
        "paper": paper_of(config.model),
        "license": "MIT",
        "files": files,
        "generated_by": "scripts/make_zoo_entry.py",
    }


def validation_images(config, max_images=None) -> tuple:
    """The run's validation files, their names (as `bfcnn.evaluate` gives them) and the images.

    Raises:
        BfcnnError: no validation folder, or a file in it that is not an image (named).
    """
    from bfcnn.errors import BfcnnError
    from bfcnn.io import read_image

    if not config.validation.directory:
        raise BfcnnError("the run's config has no validation.directory: a card needs validation images")
    files, names = validation_names(config, max_images)
    return files, names, [read_image(f, config.dataset.color) for f in files]


def ship(args) -> int:
    """A new zoo entry from a run: everything is read and measured first, the files written under
    temporary names, then moved into place, the card last. A failure before that leaves the
    entry as it was (weights, TFLite file and card that agree)."""
    from bfcnn.config import config_to_dict, load_config
    from bfcnn.evaluate import model_denoiser
    from bfcnn.export import to_tflite
    from bfcnn.io import atomic_path, json_safe

    run, zoo = Path(args.run), Path(args.zoo)
    config = load_config(run / "config.yaml")
    files, names, images = validation_images(config, args.max_images)
    borrowed = borrowed_baselines(args.baselines_from, Path(config.validation.directory).name, config.dataset.color,
                                  names)  # checked before any work
    if args.baselines_only:
        baseline_table(args, config, images, borrowed)
        return 0
    model, steps, seconds, checkpoint = restore(run, config, args.average)
    channels = config.model.get("channels", 1)
    totals = training_totals(zoo, args.name, config_to_dict(config), config.train.init_from, steps, seconds,
                             checkpoint, run=args.run)

    print(f"evaluating on {len(images)} images of {config.validation.directory} ...", flush=True)
    table = evaluate({args.name: model_denoiser(model, channels)}, images, args.sigmas)
    for name, rows in baseline_table(args, config, images, borrowed).items():
        for sigma in args.sigmas:
            table[f"{sigma:g}"][name] = rows[f"{sigma:g}"]

    keras_path, tflite_path = zoo / f"{args.name}.keras", zoo / f"{args.name}.tflite"
    card_path = zoo / f"{args.name}.json"
    keep = same_model_file(model, keras_path)
    # Leaving the block moves the keras file, the TFLite file and then the card into place; an
    # error inside it removes the temporary files and moves none.
    with contextlib.ExitStack() as stack:
        card_tmp = stack.enter_context(atomic_path(card_path))
        tflite_tmp = stack.enter_context(atomic_path(tflite_path))
        tflite_tmp.write_bytes(to_tflite(model))
        lifted, lifted_tmp = lifted_bytes(model), None
        if lifted is not None:  # a color model: its networks for tiles, beside the TFLite file
            lifted_tmp = stack.enter_context(atomic_path(lifted_path(tflite_path)))
            lifted_tmp.write_bytes(lifted)
        if keep:
            print(f"{keras_path} already holds these weights; kept")
            keras_tmp = keras_path
        else:
            keras_tmp = stack.enter_context(atomic_path(keras_path))
            model.save(keras_tmp)
        names = {"keras": keras_path.name, "tflite": tflite_path.name, "tflite_lifted": lifted_path(tflite_path).name}
        entries = file_entries(keras_tmp, tflite_tmp, names, lifted=lifted_tmp)
        card = card_of(args, config, model, steps, seconds, checkpoint, totals, len(images), table,
                       speed(model, channels, tflite_tmp), entries)
        card_tmp.write_text(json.dumps(json_safe(card), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    for sigma, rows in table.items():
        print(f"sigma {sigma}: " + "  ".join(f"{n} {r['psnr']:.2f}" for n, r in rows.items()))
    print(f"wrote {card_path}")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.refresh:
        return refresh(args.refresh, Path(args.zoo))
    from bfcnn.errors import BfcnnError

    try:
        return ship(args)
    except BfcnnError as error:  # a bad config, validation image or model file: one line, nothing written
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
