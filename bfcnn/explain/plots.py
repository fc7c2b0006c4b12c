"""Figures of adaptive filters and Jacobian spectra: matplotlib when installed, else plain Pillow.

matplotlib is the optional `docs` extra (`pip install bfcnn[docs]`); it is used through
its object-oriented API (no pyplot, no global backend switch). Without it the same
figures are drawn with Pillow alone: panels, labels and a diverging color map, plainer.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from bfcnn.errors import BfcnnError, allowed

BACKENDS = ("auto", "matplotlib", "pillow")
# Distinct colors for pixel markers and curves (RGB, 0-255).
COLORS = [(228, 26, 28), (55, 126, 184), (77, 175, 74), (152, 78, 163), (255, 127, 0),
          (166, 86, 40), (247, 129, 191), (153, 153, 153)]
# The diverging map's ends (negative, positive); zero is white.
NEGATIVE, POSITIVE = np.array([33.0, 102.0, 172.0]), np.array([178.0, 24.0, 43.0])


def resolve_backend(backend: str = "auto") -> str:
    """`matplotlib` or `pillow`; `auto` picks matplotlib when it can be imported.

    Raises:
        BfcnnError: an unknown backend, or `matplotlib` asked for but not installed.
    """
    if backend not in BACKENDS:
        raise BfcnnError(f"backend={backend!r} is not supported; allowed: {allowed(BACKENDS)}")
    if backend == "pillow":
        return backend
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if backend == "matplotlib":
            raise BfcnnError("matplotlib is not installed: pip install 'bfcnn[docs]', or use backend='pillow'")
        return "pillow"
    return "matplotlib"


def display(image: np.ndarray) -> np.ndarray:
    """An image on the 0-255 scale as uint8 [H, W, 3] for display (clipped, gray repeated)."""
    array = np.clip(np.round(np.asarray(image, np.float64)), 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    return np.repeat(array, 3, axis=-1) if array.shape[-1] == 1 else array[..., :3]


def diverging(weights: np.ndarray, limit: Optional[float] = None) -> np.ndarray:
    """A weight map [H, W] as uint8 RGB: blue negative, white zero, red positive, range +-limit."""
    w = np.asarray(weights, np.float64)
    limit = float(np.max(np.abs(w))) if limit is None else float(limit)
    t = np.clip(w / limit, -1.0, 1.0)[..., None] if limit > 0 else np.zeros(w.shape + (1,))
    white = np.full(3, 255.0)
    rgb = np.where(t >= 0, white + t * (POSITIVE - white), white - t * (NEGATIVE - white))
    return np.round(rgb).astype(np.uint8)


def _save_matplotlib(figure, path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    figure.savefig(str(path), dpi=figure.dpi)


def _font():
    from PIL import ImageFont

    return ImageFont.load_default()


def marked_image(path, image: np.ndarray, pixels: Sequence[Tuple[int, int]], title: str = "",
                 backend: str = "auto") -> None:
    """Writes the image with each pixel circled and numbered (1, 2, ...)."""
    rgb = display(image)
    height, width = rgb.shape[:2]
    if resolve_backend(backend) == "matplotlib":
        from matplotlib.figure import Figure

        scale = 6.0 / max(height, width)
        figure = Figure(figsize=(max(width * scale, 2.5), max(height * scale, 2.5) + 0.4), dpi=100)
        axes = figure.add_subplot()
        axes.imshow(rgb, interpolation="nearest")
        for i, (row, col) in enumerate(pixels):
            color = np.array(COLORS[i % len(COLORS)]) / 255.0
            axes.plot([col], [row], marker="o", markersize=12, markerfacecolor="none", markeredgecolor=color,
                      markeredgewidth=2)
            axes.annotate(str(i + 1), (col, row), xytext=(8, -8), textcoords="offset points", color=color,
                          fontsize=11, fontweight="bold")
        axes.set_axis_off()
        axes.set_title(title, fontsize=10)
        figure.tight_layout()
        _save_matplotlib(figure, path)
        return
    from PIL import Image, ImageDraw

    zoom = max(1, 512 // max(height, width))
    canvas = Image.fromarray(rgb).resize((width * zoom, height * zoom), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)
    for i, (row, col) in enumerate(pixels):
        color = COLORS[i % len(COLORS)]
        y, x, r = (row + 0.5) * zoom, (col + 0.5) * zoom, 6 + zoom
        draw.ellipse([x - r, y - r, x + r, y + r], outline=color, width=2)
        draw.text((x + r + 2, y - r - 2), str(i + 1), fill=color, font=_font())
    _with_title(canvas, title).save(str(path))


def _with_title(image, title: str):
    from PIL import Image, ImageDraw

    if not title:
        return image
    canvas = Image.new("RGB", (image.width, image.height + 16), "white")
    canvas.paste(image, (0, 16))
    ImageDraw.Draw(canvas).text((4, 2), title, fill="black", font=_font())
    return canvas


def filter_figure(path, columns: List[Dict], title: str = "", backend: str = "auto") -> None:
    """Writes a grid: one column per noise level, rows noisy crop / denoised crop / weight map.

    Args:
        columns: dicts with `noisy`, `denoised` (crops on the 0-255 scale), `weights`
            ([h, w] crop of the filter), `position` ((row, col) of the pixel in the crop),
            `label` (the column's title) and optionally `limit`, the symmetric color range
            of the weights (default: their largest magnitude).
    """
    if not columns:
        raise BfcnnError("filter_figure needs at least one column")
    if resolve_backend(backend) == "matplotlib":
        from matplotlib.figure import Figure

        n = len(columns)
        figure = Figure(figsize=(2.3 * n + 0.6, 7.4), dpi=90)
        grid = figure.subplots(3, n, squeeze=False)
        for j, column in enumerate(columns):
            row, col = column["position"]
            limit = column.get("limit") or float(np.max(np.abs(column["weights"]))) or 1.0
            panels = [(display(column["noisy"]), None), (display(column["denoised"]), None),
                      (column["weights"], limit)]
            for i, (panel, vmax) in enumerate(panels):
                axes = grid[i, j]
                if vmax is None:
                    axes.imshow(panel, interpolation="nearest")
                else:
                    shown = axes.imshow(panel, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
                    bar = figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.03)
                    bar.ax.tick_params(labelsize=7)
                axes.plot([col], [row], marker="+", markersize=9, color="#00cc00" if vmax is None else "black",
                          markeredgewidth=1.2)
                axes.set_xticks([])
                axes.set_yticks([])
            grid[0, j].set_title(column["label"], fontsize=9)
        for i, name in enumerate(("noisy", "denoised", "weights")):
            grid[i, 0].set_ylabel(name, fontsize=9)
        if title:
            figure.suptitle(title, fontsize=10)
        figure.tight_layout()
        _save_matplotlib(figure, path)
        return
    from PIL import Image, ImageDraw

    zoom = max(1, 160 // max(columns[0]["weights"].shape))
    tiles = []
    for column in columns:
        row, col = column["position"]
        panels = [display(column["noisy"]), display(column["denoised"]),
                  diverging(column["weights"], column.get("limit"))]
        images = []
        for panel in panels:
            tile = Image.fromarray(panel).resize((panel.shape[1] * zoom, panel.shape[0] * zoom), Image.NEAREST)
            draw = ImageDraw.Draw(tile)
            y, x = (row + 0.5) * zoom, (col + 0.5) * zoom
            draw.line([x - 4, y, x + 4, y], fill=(0, 200, 0))
            draw.line([x, y - 4, x, y + 4], fill=(0, 200, 0))
            images.append(tile)
        tiles.append((column["label"], images, column.get("limit") or float(np.max(np.abs(column["weights"])))))
    tile_w, tile_h = tiles[0][1][0].size
    gap, header = 6, 30
    canvas = Image.new("RGB", (len(tiles) * (tile_w + gap) + gap, header + 3 * (tile_h + gap) + 14), "white")
    draw = ImageDraw.Draw(canvas)
    for j, (label, images, limit) in enumerate(tiles):
        x = gap + j * (tile_w + gap)
        draw.text((x, 4), label, fill="black", font=_font())
        draw.text((x, 16), f"weights +-{limit:.3g}", fill="black", font=_font())
        for i, image in enumerate(images):
            canvas.paste(image, (x, header + i * (tile_h + gap)))
    _with_title(canvas, title).save(str(path))


def line_figure(path, curves: List[Dict], xlabel: str, ylabel: str, title: str = "", log_x: bool = False,
                log_y: bool = False, backend: str = "auto",
                second: Optional[Dict] = None) -> None:
    """Writes a line plot of `curves` (dicts with `x`, `y`, `label`), optionally with a second
    panel `second` = {"curves": [...], "xlabel", "ylabel", "log_x", "log_y"} to its right."""
    panels = [dict(curves=curves, xlabel=xlabel, ylabel=ylabel, log_x=log_x, log_y=log_y)]
    if second:
        panels.append({"log_x": False, "log_y": False, **second})
    if resolve_backend(backend) == "matplotlib":
        from matplotlib.figure import Figure

        figure = Figure(figsize=(5.2 * len(panels), 3.9), dpi=90)
        for axes, panel in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
            for i, curve in enumerate(panel["curves"]):
                color = curve.get("color") or np.array(COLORS[i % len(COLORS)]) / 255.0
                axes.plot(curve["x"], curve["y"], label=curve.get("label"), color=color,
                          marker=curve.get("marker"), linestyle=curve.get("linestyle", "-"), linewidth=1.5)
            axes.set_xscale("log" if panel["log_x"] else "linear")
            axes.set_yscale("log" if panel["log_y"] else "linear")
            axes.set_xlabel(panel["xlabel"])
            axes.set_ylabel(panel["ylabel"])
            axes.grid(True, alpha=0.3)
            if any(c.get("label") for c in panel["curves"]):
                axes.legend(fontsize=8)
        if title:
            figure.suptitle(title, fontsize=10)
        figure.tight_layout()
        _save_matplotlib(figure, path)
        return
    from PIL import Image

    images = [_pillow_lines(panel) for panel in panels]
    canvas = Image.new("RGB", (sum(i.width for i in images), images[0].height), "white")
    x = 0
    for image in images:
        canvas.paste(image, (x, 0))
        x += image.width
    _with_title(canvas, title).save(str(path))


def _pillow_lines(panel: Dict):
    """A bare line plot with Pillow: axes box, extreme tick labels, curves and a legend."""
    from PIL import Image, ImageDraw

    width, height, left, right, top, bottom = 520, 380, 70, 20, 20, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)

    def transform(values, log):
        values = np.asarray(values, np.float64)
        return np.log10(np.maximum(values, 1e-300)) if log else values

    xs = [transform(c["x"], panel["log_x"]) for c in panel["curves"]]
    ys = [transform(c["y"], panel["log_y"]) for c in panel["curves"]]
    finite = [v[np.isfinite(v)] for v in xs + ys]
    x_all = np.concatenate([v[np.isfinite(v)] for v in xs])
    y_all = np.concatenate([v[np.isfinite(v)] for v in ys])
    if not len(x_all) or not len(y_all) or not finite:
        return image
    x0, x1 = float(x_all.min()), float(x_all.max()) or 1.0
    y0, y1 = float(y_all.min()), float(y_all.max())
    x1, y1 = (x1 if x1 > x0 else x0 + 1.0), (y1 if y1 > y0 else y0 + 1.0)

    def point(x, y):
        return (left + (x - x0) / (x1 - x0) * (width - left - right),
                height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom))

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    font = _font()

    def label(value, log):
        return f"{10 ** value:.3g}" if log else f"{value:.3g}"

    draw.text((left, height - bottom + 4), label(x0, panel["log_x"]), fill="black", font=font)
    draw.text((width - right - 40, height - bottom + 4), label(x1, panel["log_x"]), fill="black", font=font)
    draw.text((4, height - bottom - 10), label(y0, panel["log_y"]), fill="black", font=font)
    draw.text((4, top), label(y1, panel["log_y"]), fill="black", font=font)
    draw.text((left + 100, height - 22), panel["xlabel"], fill="black", font=font)
    draw.text((4, top + 20), panel["ylabel"][:12], fill="black", font=font)
    for i, (x, y, curve) in enumerate(zip(xs, ys, panel["curves"])):
        color = COLORS[i % len(COLORS)]
        ok = np.isfinite(x) & np.isfinite(y)
        points = [point(a, b) for a, b in zip(x[ok], y[ok])]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        elif points:
            draw.ellipse([points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2], fill=color)
        if curve.get("label"):
            draw.text((width - right - 170, top + 6 + 12 * i), curve["label"][:28], fill=color, font=font)
    return image
