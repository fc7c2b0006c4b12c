"""The search windows of the N3 block and the tiles its queries are processed in.

N3 (Ploetz & Roth, "Neural Nearest Neighbors Networks", NeurIPS 2018) compares each query
patch with the candidates in a w x w window of the patch grid around it (itself excluded);
`candidate_indices` lists them. `bfcnn.layers.n3.N3Block` processes queries in tiles: an
`AxisPlan` per grid axis places the tiles and the regions that hold their candidates, and
`RowsOfTiles` gathers per-tile values for some rows of tiles. Index tables are computed with
integer arithmetic on flat ranges and broadcasting, not transposes: the TFLite converter
mis-converts some reshape / transpose chains with dynamic shapes inside a loop.
"""

from keras import ops

from bfcnn.layers.patches import along, as_int32


def _window_start(size, window):
    """First window row of each of the `size` query rows: centred, clamped to stay inside the grid."""
    return ops.clip(ops.arange(size, dtype="int32") - window // 2, 0, size - window)


def candidate_indices(grid_height, grid_width, window, rows=None):
    """Candidate patches of every query patch: a w x w window of the grid, itself excluded.

    The window is centred on the query and clamped at the borders, so every query has the
    same number of candidates; on grids smaller than the window it shrinks to the grid.

    Args:
        grid_height, grid_width: patch grid size (ints or scalar tensors), >= 1.
        window: window side in patches, >= 1.
        rows: optional int32 [n] query rows of the grid; None means all of them.

    Returns:
        int32 `[M, O]` with M = grid_height * grid_width queries (row-major; n * grid_width
        with `rows`) and O = min(window, grid_height) * min(window, grid_width) - 1 flat
        candidate indices.
    """
    gh, gw = as_int32(grid_height), as_int32(grid_width)
    wh, ww = ops.minimum(window, gh), ops.minimum(window, gw)
    if rows is None:
        rows = ops.arange(gh, dtype="int32")
    first_h, first_w = ops.take(_window_start(gh, wh), rows), _window_start(gw, ww)
    cols = along(ops.arange(gw, dtype="int32"), 1, 3)
    start_h, start_w = along(first_h, 0, 3), along(first_w, 1, 3)
    local_self = (along(rows, 0, 3) - start_h) * ww + (cols - start_w)
    t = along(ops.arange(wh * ww - 1, dtype="int32"), 2, 3)
    local = t + as_int32(t >= local_self)
    index = (start_h + local // ww) * gw + (start_w + local % ww)
    return ops.reshape(index, (ops.shape(rows)[0] * gw, wh * ww - 1))


class AxisPlan:
    """Tiling of one axis of the patch grid: tiles of queries and the regions of their candidates."""

    def __init__(self, size, window, tile):
        self.size = size  # patches along this axis of the grid
        self.window = ops.minimum(window, size)
        # One tile when its region would span the whole axis anyway (small images, training
        # patches): tiles that overlap at the end would only repeat work.
        self.tile = ops.where(size <= tile + self.window - 1, size, ops.minimum(tile, size))
        self.span = ops.minimum(self.tile + self.window - 1, size)
        self.tiles = (size + self.tile - 1) // self.tile
        # The last tile is moved back inside the grid (it may overlap the one before).
        self.start = ops.minimum(ops.arange(self.tiles, dtype="int32") * self.tile, size - self.tile)
        self.first = _window_start(size, self.window)
        # Each tile's region holds the windows of all its queries.
        self.region = ops.minimum(ops.take(self.first, self.start), size - self.span)
        queries = ops.arange(size, dtype="int32")
        self.tile_of = ops.minimum(queries // self.tile, self.tiles - 1)
        self.position = queries - ops.take(self.start, self.tile_of)

    def ranges(self, start, length):
        """[tiles, length] indices start[t] + 0..length-1."""
        return along(start, 0, 2) + along(ops.arange(length, dtype="int32"), 1, 2)

    def window_coordinate(self, tiles):
        """For the given tiles: [n, tile, span], the coordinate of each region row in the
        window of each query, and [n, tile], the query's own coordinate there."""
        query = self.ranges(ops.take(self.start, tiles), self.tile)
        first = ops.take(self.first, query)
        region = along(ops.take(self.region, tiles), 0, 3) + along(ops.arange(self.span, dtype="int32"), 2, 3)
        return region - ops.expand_dims(first, -1), query - first


def gather_tiles(values, rows, cols):
    """[B, Gh, Gw, D] -> [B * tiles_h * tiles_w, a * b, D]: the a x b blocks at rows x cols."""
    shape, depth = ops.shape(values), values.shape[-1]
    b = shape[0]
    tiles_h, a = ops.shape(rows)[0], ops.shape(rows)[1]
    tiles_w, c = ops.shape(cols)[0], ops.shape(cols)[1]
    x = ops.take(values, ops.reshape(rows, (-1,)), axis=1)
    x = ops.take(x, ops.reshape(cols, (-1,)), axis=2)
    x = ops.reshape(x, (b * tiles_h, a, tiles_w, c * depth))
    x = ops.transpose(x, (0, 2, 1, 3))
    return ops.reshape(x, (b * tiles_h * tiles_w, a * c, depth))


class RowsOfTiles:
    """The tiles of some rows of tiles of the patch grid, and their sizes (`N3Block._tile_rows`)."""

    def __init__(self, rows, n_h, n_w, window, query_tile, r, batch):
        self.plan_h, self.plan_w = AxisPlan(n_h, window, query_tile), AxisPlan(n_w, window, query_tile)
        self.n_h, self.r, self.batch = n_h, r, batch  # r: cells per patch side
        self.n_rows = ops.shape(rows)[0]
        self.start_h, self.region_h = ops.take(self.plan_h.start, rows), ops.take(self.plan_h.region, rows)
        self.rows = rows
        self.queries = self.plan_h.tile * self.plan_w.tile  # per tile
        self.region_size = self.plan_h.span * self.plan_w.span
        self.count = self.n_rows * self.plan_w.tiles  # tiles

    def regions(self, values, extra=0):
        """[B * tiles, (span_h + extra) * (span_w + extra), D]: each tile's region of a [B, Gh, Gw, D] grid."""
        return gather_tiles(values, self.plan_h.ranges(self.region_h, self.plan_h.span + extra),
                            self.plan_w.ranges(self.plan_w.region, self.plan_w.span + extra))

    def per_query(self, grid_values):
        """[B, n_h, n_w, 1] per-patch values -> [B, tiles * tile_queries, 1] for these tiles' queries."""
        values = gather_tiles(grid_values, self.plan_h.ranges(self.start_h, self.plan_h.tile),
                              self.plan_w.ranges(self.plan_w.start, self.plan_w.tile))
        return ops.reshape(values, (self.batch, self.count * self.queries, 1))


def dense_index(tiles, count):
    """Where each query's weights go in its tile's region: indices into the flat weight lists
    (O candidates plus a zero at index O per query) laid out [tiles, tile_h, tile_w, span_h,
    span_w], built from per-axis tables by 5-D broadcasting (no transposes, see the module
    docstring); positions outside a query's window, and the query itself, take the zero."""
    plan_h, plan_w = tiles.plan_h, tiles.plan_w
    tile_h, tile_w, span_h, span_w = plan_h.tile, plan_w.tile, plan_h.span, plan_w.span
    coord_h, self_h = plan_h.window_coordinate(tiles.rows)  # [n_rows, tile_h, span_h], [n_rows, tile_h]
    coord_w, self_w = plan_w.window_coordinate(ops.arange(plan_w.tiles, dtype="int32"))
    tile = ops.arange(tiles.count, dtype="int32")
    row, column = tile // plan_w.tiles, tile % plan_w.tiles
    c_h = ops.reshape(ops.take(coord_h, row, axis=0), (tiles.count, tile_h, 1, span_h, 1))
    c_w = ops.reshape(ops.take(coord_w, column, axis=0), (tiles.count, 1, tile_w, 1, span_w))
    s_h = ops.reshape(ops.take(self_h, row, axis=0), (tiles.count, tile_h, 1, 1, 1))
    s_w = ops.reshape(ops.take(self_w, column, axis=0), (tiles.count, 1, tile_w, 1, 1))
    valid_h = (c_h >= 0) & (c_h < plan_h.window)
    valid_w = (c_w >= 0) & (c_w < plan_w.window)
    window_index = c_h * plan_w.window + c_w
    self_index = s_h * plan_w.window + s_w
    index = ops.where(valid_h & valid_w & (window_index != self_index),
                      window_index - as_int32(window_index > self_index), count)
    query_index = ops.reshape(ops.arange(tiles.count * tiles.queries, dtype="int32"), (tiles.count, tile_h, tile_w, 1, 1))
    return ops.reshape(index + query_index * (count + 1), (-1,))
