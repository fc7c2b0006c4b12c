"""The neural nearest neighbours block, N3 (Ploetz & Roth, "Neural Nearest Neighbors Networks", NeurIPS 2018).

The image is cut into p x p patches at stride s. Each query patch compares a learned
embedding of itself with the candidate patches in a w x w window of the patch grid
around it (itself excluded), turns the distances into k relaxed nearest-neighbour
distributions (`bfcnn.ops.neural_nearest_neighbors`), averages the candidates' patches of
the block input with each distribution, and folds the k averaged patches back into k
images; the output is `concat(x, z_1 - x, ..., z_k - x)`.

Layout. A patch is r x r cells of s x s pixels (`patch_size = r * stride`), so unfolding
is a space-to-depth and slices, and folding is pads and adds (`bfcnn.layers.patches`,
which gives the order of a patch vector). Candidate windows and the tiles of queries are
in `bfcnn.layers.n3_windows`.

Cost. Queries are processed in tiles of `query_tile` x `query_tile` patches; each tile
is compared with the region of the grid that holds its candidates, by one matrix product
over cells (not patches, which overlap), and its k averaged patches come from one matrix
product of dense region weights with the region's patches. Time grows linearly with the
number of pixels; nothing is ever computed for all pairs of patches of a large image. In
training mode all tiles are processed at once (training patches are small); in inference
mode a `tf.while_loop` processes about `inference_chunk` queries at a time (no loop when a
static image size fits in one chunk, or inside `queries_in_one_pass`, as TFLite exports
are traced), so beyond the two small CNNs, the input and the output, memory does not grow
with the image (benchmarks/bench_n3.py, docs/n3.md).

TFLite. Everything maps to builtin TFLite ops (GATHER, BATCH_MATMUL, ..., and for the loop
WHILE and DYNAMIC_UPDATE_SLICE) and converts with a dynamic [1, H, W, C] input. Two converter
limitations shaped the code: new-axis slices (`x[:, None]`) of dynamically shaped tensors
have no builtin (reshapes are used instead), and some reshape / transpose chains and
captured tensors inside the loop are mis-converted (index tables are computed with integer
arithmetic on flat ranges, and the loop receives every tensor as a loop variable).
"""

import contextlib
import contextvars

import keras
import tensorflow as tf
from keras import ops

from bfcnn.layers.arguments import check_bool, check_int, check_number
from bfcnn.layers.bias_free import BiasFreeConvBlock
from bfcnn.layers.n3_windows import AxisPlan, RowsOfTiles, candidate_indices, dense_index, gather_tiles
from bfcnn.layers.patches import (
    along,
    as_int32,
    check_patches,
    fold,
    pad_reflect,
    patch_grid_size,
    shifted_sum,
    space_to_depth,
    unfold,
)
from bfcnn.ops.nearest_neighbors import neighbor_weight_list

# Set by `queries_in_one_pass`: N3 blocks traced while it is True leave the loop out (None: not chosen).
_ONE_PASS = contextvars.ContextVar("bfcnn_n3_queries_in_one_pass", default=None)

# Smallest T / mean(y^2) in the scale-equivariant mode is `epsilon`; this keeps
# mean(y^2) itself away from 0 for an all-zero image (it does not affect other images).
_TINY = 1e-12


@contextlib.contextmanager
def queries_in_one_pass(enabled: bool = True, override: bool = True):
    """N3 blocks traced inside this context process all their queries at once in inference
    mode too, as in training, rather than in a loop over chunks of `inference_chunk` queries.

    For graphs whose runners cut large images into tiles, which bounds memory anyway:
    `bfcnn.export.to_tflite` traces in it. In LiteRT the loop's tensors are sized while it
    runs and its body runs without XNNPACK; leaving it out made `n3net_gray`'s file faster
    and its peak memory no larger (docs/inference.md, "One pass in TFLite").

    Args:
        enabled: False keeps the loop (to compare, or to bound memory for a runner that
            does not tile).
        override: False leaves a choice made by an enclosing `queries_in_one_pass` in place
            (how `to_tflite` uses it, so `with queries_in_one_pass(False): to_tflite(m)`
            converts the loop).

    Example:
        >>> with queries_in_one_pass():
        ...     graph = tf.function(model).get_concrete_function(tf.TensorSpec([1, None, None, 1]))
    """
    if not override and _ONE_PASS.get() is not None:
        yield
        return
    token = _ONE_PASS.set(bool(enabled))
    try:
        yield
    finally:
        _ONE_PASS.reset(token)


def _cnn(depth, filters, outputs, kernel_size, batch_norm, use_bias, name, dtype):
    """A DnCNN-style stack without additive constants: (depth-1) x conv-ReLU, then a linear conv."""
    layers = [
        BiasFreeConvBlock(filters, kernel_size, batch_norm=batch_norm and i > 0, activation="relu",
                          use_bias=use_bias, dtype=dtype, name=f"{name}{i}")
        for i in range(depth - 1)
    ]
    layers.append(BiasFreeConvBlock(outputs, kernel_size, batch_norm=False, activation="linear",
                                    use_bias=use_bias, dtype=dtype, name=f"{name}{depth - 1}"))
    return layers


@keras.saving.register_keras_serializable(package="bfcnn")
class N3Block(keras.layers.Layer):
    """Neural nearest neighbours block (Ploetz & Roth, NeurIPS 2018).

    `call(x)` maps [B, H, W, C] to [B, H, W, C * (k + 1)]: `concat(x, z_1 - x, ..., z_k - x)`,
    where `z_j` folds back the patches of x averaged with the j-th relaxed nearest-neighbour
    weights. The first C channels are x exactly. Any H, W >= 1: the image is
    reflect-padded (bottom, right) so the patch grid covers it, the grid has at least two
    patches, and on grids smaller than `window` the window shrinks to the grid (so a query
    has `min(window, n_h) * min(window, n_w) - 1` candidates; with fewer than k, later
    distributions fall back on candidates already used).

    Distances are squared Euclidean distances between patches of a learned embedding (a
    bias-free CNN, x -> `embedding_channels`); the temperature comes from a second CNN
    (x -> 1 channel), averaged over each query patch:

    * `scale_equivariant=False` (the paper): the CNN gives log T per pixel.
    * `scale_equivariant=True`: the CNN gives t, `T = mean_patch(t^2) + epsilon * mean(y^2)`
      (y = the block input, the mean is per image). With a bias-free t, d and T both
      scale as a^2 when y scales by a > 0; the neighbour relaxation is evaluated on
      d / mean(y^2) and T / mean(y^2), which are invariant, so the weights are
      invariant and the block is homogeneous, `f(a*y) = a*f(y)` (in inference mode).

    Args:
        k: number of neighbour images, >= 1.
        embedding_channels: channels of the embedding, >= 1 (the paper uses 8).
        patch_size: patch side p in pixels, a multiple of `stride`.
        stride: step s between patches.
        window: side of the candidate window, in patches, >= 2.
        embedding_depth: convolutions in each of the two CNNs, >= 1.
        embedding_filters: channels of their hidden layers.
        kernel_size: their kernel size.
        batch_norm: BiasFreeBatchNorm in their hidden layers (not after the first).
        scale_equivariant: see above.
        epsilon: in the scale-equivariant mode, the smallest T / mean(y^2), > 0.
        use_bias: True gives the CNNs biases (the with-bias twin of a bias-free model).
        query_tile: queries are processed in tiles of this many patches per side, >= 1.
            Trades time (matrix product sizes) against memory; it never changes the result.
        inference_chunk: in inference mode, about this many query patches are processed at
            a time (whole rows of tiles, at least one), >= 1, so peak memory does not grow
            with the image beyond the input, output and the CNNs' activations.

    Example:
        >>> block = N3Block(k=7)
        >>> y = block(keras.ops.ones((1, 40, 40, 1)))   # (1, 40, 40, 8)
    """

    def __init__(
        self,
        k=7,
        embedding_channels=8,
        patch_size=10,
        stride=5,
        window=15,
        embedding_depth=3,
        embedding_filters=64,
        kernel_size=3,
        batch_norm=True,
        scale_equivariant=False,
        epsilon=1e-3,
        use_bias=False,
        query_tile=8,
        inference_chunk=4096,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.k = k = check_int("k", k)
        self.embedding_channels = embedding_channels = check_int("embedding_channels", embedding_channels)
        self.patch_size, self.stride = patch_size, stride = check_patches(patch_size, stride)
        self.window = window = check_int("window", window, 2)
        self.embedding_depth = embedding_depth = check_int("embedding_depth", embedding_depth)
        self.embedding_filters = embedding_filters = check_int("embedding_filters", embedding_filters)
        self.kernel_size = kernel_size = check_int("kernel_size", kernel_size)
        self.batch_norm = check_bool("batch_norm", batch_norm)
        self.scale_equivariant = check_bool("scale_equivariant", scale_equivariant)
        self.epsilon = check_number("epsilon", epsilon, 0.0, strict=True)
        self.use_bias = check_bool("use_bias", use_bias)
        self.query_tile = check_int("query_tile", query_tile)
        self.inference_chunk = check_int("inference_chunk", inference_chunk)
        # Read by bfcnn.models.is_bias_free: a learned log-temperature does not scale.
        self.homogeneous = self.scale_equivariant and not self.use_bias
        common = dict(kernel_size=kernel_size, batch_norm=self.batch_norm, use_bias=self.use_bias,
                      dtype=self.dtype_policy)
        self.embedding = _cnn(embedding_depth, embedding_filters, embedding_channels,
                              name="embedding", **common)
        self.temperature = _cnn(embedding_depth, embedding_filters, 1, name="temperature", **common)

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError("N3Block needs a known number of channels (last axis)")
        for layers in (self.embedding, self.temperature):
            shape = input_shape
            for layer in layers:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)

    @staticmethod
    def _run(layers, x, training):
        for layer in layers:
            x = layer(x, training=training)
        return ops.cast(x, "float32")

    def call(self, inputs, training=False):
        x = ops.cast(inputs, "float32")
        embedding = self._run(self.embedding, inputs, training)
        # One CNN after the other: their full-resolution activations dominate peak memory.
        with tf.control_dependencies([embedding]):
            temperature = self._run(self.temperature, tf.identity(inputs), training)
        p, s, k = self.patch_size, self.stride, self.k
        r = p // s
        shape = ops.shape(x)
        batch, height, width = shape[0], shape[1], shape[2]
        n_h, n_w = patch_grid_size(height, width, p, s)
        n_w = n_w + as_int32(n_h * n_w < 2)  # at least one candidate per query
        plan_h = AxisPlan(n_h, self.window, self.query_tile)
        plan_w = AxisPlan(n_w, self.window, self.query_tile)
        padded_h, padded_w = (n_h - 1) * s + p, (n_w - 1) * s + p

        # Distances are |q|^2 + |c|^2 - 2 q.c: centring the embedding leaves them unchanged
        # and shrinks the terms that cancel, which halved the float32 rounding noise that the
        # temperature amplifies (TFLite vs Keras on n3net_gray: 1.6e-3 -> 7.3e-4 on 0-255).
        embedding = embedding - ops.mean(embedding, axis=(1, 2), keepdims=True)
        cells = space_to_depth(pad_reflect(embedding, padded_h, padded_w), s)  # [B, Hc, Wc, s*s*E]
        squares = shifted_sum(ops.sum(ops.square(cells), axis=-1, keepdims=True), r, n_h, n_w)
        if self.scale_equivariant:
            energy = ops.mean(ops.square(x), axis=(1, 2, 3), keepdims=True) + _TINY  # [B, 1, 1, 1]
            temperature = ops.square(temperature)
        t_cells = ops.mean(space_to_depth(pad_reflect(temperature, padded_h, padded_w), s), axis=-1,
                           keepdims=True)
        t_patch = shifted_sum(t_cells, r, n_h, n_w) / float(r * r)  # [B, n_h, n_w, 1]
        if self.scale_equivariant:
            log_temperature = ops.log(t_patch / energy + self.epsilon)
            energy = ops.reshape(energy, (-1, 1, 1))
        else:
            energy, log_temperature = ops.ones((batch, 1, 1), "float32"), t_patch  # d / 1 = d
        patches = unfold(x, p, s, n_h, n_w)  # [B, n_h, n_w, F]
        depth = patches.shape[-1]
        patch_data = (n_h, n_w, cells, squares, log_temperature, energy, patches)
        queries = plan_w.tiles * plan_h.tile * plan_w.tile  # per row of tiles

        if training or _ONE_PASS.get() or self._one_chunk(inputs.shape[1], inputs.shape[2]):
            z = self._tile_rows(ops.arange(plan_h.tiles, dtype="int32"), *patch_data)
        else:
            # Inference: about `inference_chunk` queries at a time, so memory stays bounded.
            rows = ops.minimum(ops.maximum(self.inference_chunk // queries, 1), plan_h.tiles)
            chunks = (plan_h.tiles + rows - 1) // rows
            buffer = ops.zeros((chunks * rows, batch, queries, k * depth), "float32")

            def body(c, buffer, *patch_data):
                last = AxisPlan(patch_data[0], self.window, self.query_tile).tiles - 1
                chunk = ops.minimum(c * rows + ops.arange(rows, dtype="int32"), last)
                z = self._tile_rows(chunk, *patch_data)
                return (c + 1, ops.slice_update(buffer, (c * rows, 0, 0, 0), z)) + tuple(patch_data)

            # Sequential chunks (parallel_iterations=1, which keras.ops.fori_loop cannot say);
            # every input is a loop variable, as the TFLite converter mishandles captures.
            z = tf.while_loop(lambda c, *_: c < chunks, body, (ops.convert_to_tensor(0), buffer) + patch_data,
                              parallel_iterations=1)[1]
            z = z[: plan_h.tiles]

        # Tiles -> queries (the last tile of an axis may overlap the one before it).
        z = ops.reshape(ops.transpose(z, (1, 0, 2, 3)), (batch, plan_h.tiles * queries, k * depth))
        tile_queries = plan_h.tile * plan_w.tile
        back = ((along(plan_h.tile_of, 0, 2) * plan_w.tiles + along(plan_w.tile_of, 1, 2)) * tile_queries
                + along(plan_h.position, 0, 2) * plan_w.tile + along(plan_w.position, 1, 2))
        z = ops.reshape(ops.take(z, ops.reshape(back, (-1,)), axis=1), (batch, n_h, n_w, k * depth))
        out = [x]
        for j in range(k):
            out.append(fold(z[..., j * depth : (j + 1) * depth], height, width, p, s) - x)
        return ops.cast(ops.concatenate(out, axis=-1), self.compute_dtype)

    def _one_chunk(self, height, width):
        """True when an image of this static size fits in one inference chunk (False if unknown).

        The loop over chunks is then left out of the graph: a graph traced for a fixed size
        (a TFLite file for tiles of one size) has no WHILE, so LiteRT sizes every tensor ahead.
        The arithmetic mirrors `patch_grid_size` and `AxisPlan` on Python ints.
        """
        if height is None or width is None:
            return False
        p, s = self.patch_size, self.stride
        n_h, n_w = (max((n - p + s - 1) // s, 0) + 1 for n in (height, width))
        n_w += int(n_h * n_w < 2)

        def tiling(size):
            window = min(self.window, size)
            tile = size if size <= self.query_tile + window - 1 else min(self.query_tile, size)
            return tile, -(-size // tile)

        (tile_h, tiles_h), (tile_w, tiles_w) = tiling(n_h), tiling(n_w)
        return max(self.inference_chunk // (tiles_w * tile_h * tile_w), 1) >= tiles_h

    def _tile_rows(self, rows, n_h, n_w, cells, squares, log_temperature, energy, patches):
        """The k averaged patches of every query in the given rows of tiles.

        Returns [len(rows), B, tiles_w * tile_h * tile_w, k * F]: per row of tiles, per tile
        and query (row-major), the k averaged patches one after the other.
        """
        tiles = RowsOfTiles(rows, n_h, n_w, self.window, self.query_tile, self.patch_size // self.stride,
                            ops.shape(cells)[0])
        dots, local, count = self._patch_dots(tiles, cells, n_w)
        query = ops.expand_dims(ops.arange(tiles.count * tiles.queries, dtype="int32"), -1)
        neighbours = ops.take(ops.reshape(tiles.regions(squares), (tiles.batch, tiles.count * tiles.region_size)),
                              local + (query // tiles.queries) * tiles.region_size, axis=1)
        distances = ops.maximum(tiles.per_query(squares) + neighbours - 2.0 * dots, 0.0) / energy
        weights = neighbor_weight_list(distances, tiles.per_query(log_temperature), self.k)
        return self._aggregate(tiles, weights, dense_index(tiles, count), count, patches)

    def _patch_dots(self, tiles, cells, n_w):
        """Dot products of each query's patch with its O candidates', from the cells' dot products.

        Returns ([B, tiles * tile_queries, O] dot products, [tiles * tile_queries, O] each
        candidate's position in its tile's region (row-major), O).
        """
        plan_h, plan_w, r, batch = tiles.plan_h, tiles.plan_w, tiles.r, tiles.batch
        tile_h, tile_w, span_h, span_w = plan_h.tile, plan_w.tile, plan_h.span, plan_w.span

        # Dot products of the cells of each tile's queries with the cells of its region:
        # [B * tiles, query_cells, region_cells].
        query_cells = gather_tiles(cells, plan_h.ranges(tiles.start_h, tile_h + r - 1),
                                   plan_w.ranges(plan_w.start, tile_w + r - 1))
        region_cells = tiles.regions(cells, extra=r - 1)
        cell_dots = ops.matmul(query_cells, ops.transpose(region_cells, (0, 2, 1)))
        shape = ops.shape(cell_dots)
        cell_dots = ops.reshape(cell_dots, (batch, tiles.count * shape[1] * shape[2]))

        # The queries of these tiles, in tile order (tile row, tile column, query row, query
        # column), and their candidates as positions (ri, rj) in their tile's region. Integer
        # arithmetic on a flat range rather than transposes (the TFLite converter mishandles
        # some reshape / transpose chains with dynamic shapes inside a loop).
        query_rows = ops.reshape(plan_h.ranges(tiles.start_h, tile_h), (-1,))
        cand = candidate_indices(tiles.n_h, n_w, self.window, rows=query_rows)  # [rows * tile_h * n_w, O]
        count = ops.shape(cand)[1]
        query = ops.arange(tiles.count * tiles.queries, dtype="int32")
        rest, q_w = query // tile_w, query % tile_w
        rest, q_h = rest // tile_h, rest % tile_h
        row, column = rest // plan_w.tiles, rest % plan_w.tiles
        cand = ops.take(cand, (row * tile_h + q_h) * n_w + ops.take(plan_w.start, column) + q_w, axis=0)
        ri = cand // n_w - ops.expand_dims(ops.take(tiles.region_h, row), -1)
        rj = cand % n_w - ops.expand_dims(ops.take(plan_w.region, column), -1)

        # A patch dot product is the sum of r x r cell dot products along a diagonal of
        # cell_dots: gathered at the first cell, then at r*r - 1 fixed offsets.
        cells_w, region_cells_w = tile_w + r - 1, span_w + r - 1
        region_cell_count = (span_h + r - 1) * region_cells_w
        tile_cell_dots = (tile_h + r - 1) * cells_w * region_cell_count
        first = ops.expand_dims((query // tiles.queries) * tile_cell_dots
                                + (q_h * cells_w + q_w) * region_cell_count, -1) + ri * region_cells_w + rj
        dots = None
        for u in range(r):
            for v in range(r):
                offset = u * (cells_w * region_cell_count + region_cells_w) + v * (region_cell_count + 1)
                piece = ops.take(cell_dots, first + offset, axis=1)
                dots = piece if dots is None else dots + piece  # [B, tiles * tile_queries, O]
        return dots, ri * span_w + rj, count

    def _aggregate(self, tiles, weights, index, count, patches):
        """Each weight list (one per neighbour, [B, tiles * tile_queries, O]) spread over its
        tile's region by `index` and multiplied with the region's patches; the k results side
        by side, as `_tile_rows` returns them."""
        batch = tiles.batch
        region = tiles.regions(patches)
        zero = ops.zeros_like(weights[0][:, :, :1])
        z = []
        for w_j in weights:
            w_j = ops.reshape(ops.concatenate([w_j, zero], axis=-1), (batch, tiles.count * tiles.queries * (count + 1)))
            w_j = ops.reshape(ops.take(w_j, index, axis=1), (batch * tiles.count, tiles.queries, tiles.region_size))
            z.append(ops.matmul(w_j, region))  # [B * tiles, tile_queries, F]
        z = ops.concatenate(z, axis=-1)
        z = ops.reshape(z, (batch, tiles.n_rows, tiles.plan_w.tiles * tiles.queries, self.k * ops.shape(region)[-1]))
        return ops.transpose(z, (1, 0, 2, 3))

    def compute_output_shape(self, input_shape):
        channels = None if input_shape[-1] is None else input_shape[-1] * (self.k + 1)
        return (*input_shape[:-1], channels)

    def get_config(self):
        config = super().get_config()
        config.update(
            k=self.k,
            embedding_channels=self.embedding_channels,
            patch_size=self.patch_size,
            stride=self.stride,
            window=self.window,
            embedding_depth=self.embedding_depth,
            embedding_filters=self.embedding_filters,
            kernel_size=self.kernel_size,
            batch_norm=self.batch_norm,
            scale_equivariant=self.scale_equivariant,
            epsilon=self.epsilon,
            use_bias=self.use_bias,
            query_tile=self.query_tile,
            inference_chunk=self.inference_chunk,
        )
        return config


@keras.saving.register_keras_serializable(package="bfcnn")
class N3Branch(keras.layers.Layer):
    """A residual N3 branch for a feature map: `h + W_out N3(W_in h)`.

    `W_in` (1x1) reduces the `filters` feature channels to `channels`, an `N3Block` in its
    scale-equivariant mode (Ploetz & Roth, NeurIPS 2018) appends k nearest-neighbour
    aggregates of them, and `W_out` (1x1, initialized to zero) maps the result back to
    `filters` channels, added to h. With `W_out = 0` the branch is the identity, so adding
    it to a trained network leaves that network's function unchanged until training moves
    `W_out`; every part is linear or homogeneous (in inference mode: the embedding's batch
    norm uses batch statistics in training), so a bias-free model stays bias-free.

    Args:
        filters: channels of the feature map (input and output).
        channels: channels the N3 block works on, >= 1.
        k, patch_size, stride, window, embedding_depth, embedding_filters, epsilon,
            query_tile, inference_chunk: as in `N3Block`.
        use_bias: give the convolutions biases (the with-bias twin of a bias-free model).

    Example:
        >>> branch = N3Branch(64)
        >>> y = branch(keras.ops.ones((1, 32, 32, 64)))   # (1, 32, 32, 64), equal to the input
    """

    def __init__(self, filters, channels=16, k=4, patch_size=10, stride=5, window=15, embedding_depth=3,
                 embedding_filters=32, epsilon=1e-3, query_tile=8, inference_chunk=4096, use_bias=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.filters, self.channels = check_int("filters", filters), check_int("channels", channels)
        self.use_bias = check_bool("use_bias", use_bias)
        self.n3_config = dict(k=k, patch_size=patch_size, stride=stride, window=window,
                              embedding_depth=embedding_depth, embedding_filters=embedding_filters,
                              epsilon=epsilon, query_tile=query_tile, inference_chunk=inference_chunk)
        self.reduce = keras.layers.Conv2D(channels, 1, use_bias=self.use_bias, kernel_initializer="he_normal",
                                          dtype=self.dtype_policy, name="reduce")
        self.n3 = N3Block(scale_equivariant=True, use_bias=self.use_bias, dtype=self.dtype_policy, name="n3",
                          **self.n3_config)
        self.n3_config = {key: getattr(self.n3, key) for key in self.n3_config}  # as checked: ints, not numpy
        self.expand = keras.layers.Conv2D(filters, 1, use_bias=self.use_bias, kernel_initializer="zeros",
                                          dtype=self.dtype_policy, name="expand")
        self.homogeneous = not self.use_bias

    def build(self, input_shape):
        if input_shape[-1] != self.filters:
            raise ValueError(f"N3Branch(filters={self.filters}) needs inputs of {self.filters} channels (its output "
                             f"is added to them), got {input_shape[-1]}")
        self.reduce.build(input_shape)
        reduced = (*input_shape[:-1], self.channels)
        self.n3.build(reduced)
        self.expand.build(self.n3.compute_output_shape(reduced))

    def call(self, inputs, training=False):
        return inputs + self.expand(self.n3(self.reduce(inputs), training=training))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "channels": self.channels,
                "use_bias": self.use_bias, **self.n3_config}
