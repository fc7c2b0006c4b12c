"""Patches of an image on a grid, unfolded and folded back as cells.

The patch scheme of the N3 block (Ploetz & Roth, "Neural Nearest Neighbors Networks",
NeurIPS 2018; `bfcnn.layers.n3`): p x p patches at stride s on a grid that covers the
image, reflect-padded at the bottom and right, overlapping patches averaged when folded.

Layout. A patch is r x r cells of s x s pixels (`patch_size = r * stride`), so unfolding
is a space-to-depth and slices, and folding is pads and adds: no scatter, no
`extract_patches`, nothing that lacks a TFLite builtin. Patch vectors are ordered
(cell row, cell column, row in cell, column in cell, channel).
"""

from keras import ops

from bfcnn.layers.arguments import check_int


def check_patches(patch_size, stride):
    """(patch_size, stride) as ints, patch_size a multiple of stride, or a ValueError."""
    patch_size, stride = check_int("patch_size", patch_size), check_int("stride", stride)
    if patch_size % stride:
        raise ValueError(
            f"patch_size={patch_size} must be a multiple of stride={stride} "
            "(patches are made of stride x stride cells)"
        )
    return patch_size, stride


def as_int32(x):
    """x cast to int32."""
    return ops.cast(x, "int32")


def along(vector, axis, rank):
    """A 1-D tensor reshaped to broadcast along `axis` of a rank-`rank` tensor.

    (A reshape rather than `x[:, None]`: TFLite has no builtin for new-axis strided slices
    of dynamically shaped tensors.)
    """
    return ops.reshape(vector, tuple(-1 if i == axis else 1 for i in range(rank)))


def patch_grid_size(height, width, patch_size, stride):
    """Patches per column and row of the grid that covers an image: `ceil((n - p) / s) + 1`.

    Images smaller than a patch get one patch (reflect-padded); any H, W >= 1 is covered.
    """
    def axis(n):
        return ops.maximum((as_int32(n) - patch_size + stride - 1) // stride, 0) + 1

    return axis(height), axis(width)


def _reflect_index(n, length):
    """`length` indices into an axis of n >= 1 pixels: 0, 1, ..., n-1, n-2, ... (reflection)."""
    idx = ops.arange(length, dtype="int32")
    period = ops.maximum(2 * (n - 1), 1)
    idx = idx % period
    return ops.where(idx > n - 1, period - idx, idx)


def pad_reflect(x, height, width):
    """Reflect-pads [B, H, W, C] at the bottom and right to [B, height, width, C]."""
    shape = ops.shape(x)
    x = ops.take(x, _reflect_index(as_int32(shape[1]), height), axis=1)
    return ops.take(x, _reflect_index(as_int32(shape[2]), width), axis=2)


def space_to_depth(x, s):
    """[B, H, W, C] -> [B, H/s, W/s, s*s*C], channels ordered (row, column, channel)."""
    if s == 1:
        return x
    shape, c = ops.shape(x), x.shape[-1]
    b, h, w = shape[0], as_int32(shape[1]), as_int32(shape[2])
    x = ops.reshape(x, (b * (h // s), s, w // s, s * c))
    x = ops.transpose(x, (0, 2, 1, 3))
    return ops.reshape(x, (b, h // s, w // s, s * s * c))


def _depth_to_space(x, s):
    """Inverse of `space_to_depth`."""
    if s == 1:
        return x
    shape, c = ops.shape(x), x.shape[-1] // (s * s)
    b, h, w = shape[0], as_int32(shape[1]), as_int32(shape[2])
    x = ops.reshape(x, (b * h, w, s, s * c))
    x = ops.transpose(x, (0, 2, 1, 3))
    return ops.reshape(x, (b, h * s, w * s, c))


def shifted_sum(x, r, n_h, n_w):
    """Sum over (u, v) in r x r of x[:, u:u+n_h, v:v+n_w]: per-patch sums of per-cell values."""
    total = None
    for u in range(r):
        for v in range(r):
            piece = x[:, u : u + n_h, v : v + n_w]
            total = piece if total is None else total + piece
    return total


def _cells_to_patches(cells, r, n_h, n_w):
    """[B, n_h+r-1, n_w+r-1, D] cells -> [B, n_h, n_w, r*r*D] patch vectors."""
    if r == 1:
        return cells
    return ops.concatenate(
        [cells[:, u : u + n_h, v : v + n_w, :] for u in range(r) for v in range(r)], axis=-1
    )


def unfold(x, patch_size, stride, n_h, n_w):
    """`unfold_patches` on a given n_h x n_w grid, without checking the arguments."""
    height = (n_h - 1) * stride + patch_size
    width = (n_w - 1) * stride + patch_size
    cells = space_to_depth(pad_reflect(x, height, width), stride)
    return _cells_to_patches(cells, patch_size // stride, n_h, n_w)


def fold(patches, height, width, patch_size, stride):
    """`fold_patches` without checking the arguments."""
    r = patch_size // stride
    depth = patches.shape[-1] // (r * r)
    ones = ops.ones_like(patches[:1, :, :, :1])
    total, count = None, None
    for u in range(r):
        for v in range(r):
            pad = [[0, 0], [u, r - 1 - u], [v, r - 1 - v], [0, 0]]
            i = u * r + v
            piece = ops.pad(patches[..., i * depth : (i + 1) * depth], pad)
            ones_piece = ops.pad(ones, pad)
            total = piece if total is None else total + piece
            count = ones_piece if count is None else count + ones_piece
    image = _depth_to_space(total / count, stride)
    return image[:, :height, :width, :]


def unfold_patches(images, patch_size, stride):
    """Cuts [B, H, W, C] images into the patches of the covering grid (reflect padding).

    Args:
        images: float [B, H, W, C], any H, W >= 1.
        patch_size: patch side p, a multiple of `stride`.
        stride: distance s between patches.

    Returns:
        [B, n_h, n_w, p*p*C] with `n = ceil((size - p) / s) + 1` (at least 1); see the
        module docstring for the order of a patch vector.
    """
    check_patches(patch_size, stride)
    shape = ops.shape(images)
    n_h, n_w = patch_grid_size(shape[1], shape[2], patch_size, stride)
    return unfold(images, patch_size, stride, n_h, n_w)


def fold_patches(patches, height, width, patch_size, stride):
    """Puts patches back into [B, height, width, C] images, averaging where they overlap.

    `fold_patches(unfold_patches(x, p, s), H, W, p, s) == x` (exactly when every pixel is
    covered by 1, 2 or 4 patches, as for p = 2 s).
    """
    check_patches(patch_size, stride)
    return fold(patches, height, width, patch_size, stride)
