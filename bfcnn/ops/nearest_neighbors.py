"""Continuous k-nearest-neighbour relaxation (Ploetz & Roth, "Neural Nearest Neighbors Networks", NeurIPS 2018).

A query has O candidates at squared distances `d`. The relaxation replaces the hard
choice of the j-th nearest candidate by a distribution `w_j` over the O candidates:

    alpha_1 = -d
    w_j = softmax(alpha_j / T)
    alpha_{j+1} = alpha_j + log(1 - w_j)

`log(1 - w_j)` is the log-probability that a candidate has not been taken by step j, so
`w_{j+1}` moves on to the next candidate. As `T -> 0`, `w_j` tends to the one-hot vector
of the j-th nearest candidate (the paper's limit); as `T -> inf` every `w_j` is uniform.

The temperature divides `alpha_j` at every step, as in the paper. Folding it in once
(`alpha_1 = -d / T`, `w_j = softmax(alpha_j)`, as some re-implementations do) has no hard
limit: as `T -> 0` it gives `w_2 -> (1/2, 1/2)` on the first two neighbours, because
`log(1 - w_1)` then only brings the first neighbour level with the second. As `log(1 - w)`
is not divided by T, the weights are not a function of d / T alone: the hard limit needs
T below the ratios of successive distance gaps (e.g. `T < (d_2 - d_1) / (d_3 - d_1)`), not
only below the gaps; scaling d and T together (as `N3Block(scale_equivariant=True)` does
to stay scale invariant) changes the weights unless both are normalised first.

Numerics:

* Everything is computed in log space. `log(1 - w_o)` (a `log1mexp` of `log w_o`) is
  evaluated as a leave-one-out log-sum-exp, `logsumexp_{o' != o}(z) - logsumexp(z)` with
  `z = alpha / T`, which stays exact when `w_o` rounds to 1 in float32 (logit gaps above
  ~17) and whose gradient is bounded by 2 in magnitude: no NaN or infinite gradient as
  `w_j -> 1`. Weights are never clipped to `[eps, 1 - eps]`: clipping breaks the
  normalisation and makes every `w_j` collapse onto the same neighbour once the logit gap
  exceeds about 16.
* `log_temperature` is clamped to `[LOG_TEMPERATURE_MIN, LOG_TEMPERATURE_MAX]` and `alpha`
  (kept <= 0 by subtracting its row maximum, which no softmax sees) is clamped below at
  `-ALPHA_RANGE`, so `|alpha / T| <= ALPHA_RANGE * exp(-LOG_TEMPERATURE_MIN)` ~ 4.9e28:
  the logits never overflow float32, whatever the distances (even `inf`). Distance gaps
  beyond `ALPHA_RANGE` are saturated; such candidates already have weight exactly 0.

Ties: candidates at exactly equal distances are not ordered, so the relaxation splits the
weight between them: for n tied nearest candidates `w_1` gives each 1/n, even as `T -> 0`,
and the following `w_j` keep sharing the weight between them instead of choosing one
(the set of the first n neighbours is right on average; a single `w_j` is not one-hot).
With fewer than k candidates, the extra distributions fall back on candidates already used.
"""

import operator

from keras import ops

# Range of the log-temperature: T in [2.1e-9, 4.9e8]. Together with ALPHA_RANGE this keeps
# every logit alpha / T finite in float32 (|alpha / T| <= 1e20 * e^20 ~ 4.9e28 < 3.4e38).
LOG_TEMPERATURE_MIN = -20.0
LOG_TEMPERATURE_MAX = 20.0
# alpha is kept in [-ALPHA_RANGE, 0]: distances further than this beyond the nearest
# candidate, or already-chosen candidates, saturate there (their weight is 0 anyway).
ALPHA_RANGE = 1e20
# Below any logit: stands for "no other candidate" in the leave-one-out maximum.
_SENTINEL = -1e30


def _log_softmax_and_log1m(z):
    """`log softmax(z)` and `log(1 - softmax(z))` along the last axis, both stable.

    `log(1 - w_o) = logsumexp_{o' != o} z - logsumexp z`. For every candidate but a unique
    maximum, the leave-one-out sum still contains the maximum's term exp(0) = 1, so
    `s1 - e1_o >= 1` holds exactly and is computed without cancellation; for the unique
    maximum, the sum is taken relative to the second largest logit instead.
    """
    m1 = ops.max(z, axis=-1, keepdims=True)
    e1 = ops.exp(z - m1)
    s1 = ops.sum(e1, axis=-1, keepdims=True)
    lse = m1 + ops.log(s1)
    log_w = z - lse

    is_max = z >= m1
    n_max = ops.sum(ops.cast(is_max, z.dtype), axis=-1, keepdims=True)
    unique_max = ops.logical_and(is_max, n_max < 1.5)
    m2 = ops.max(ops.where(is_max, _SENTINEL, z), axis=-1, keepdims=True)
    e2 = ops.where(is_max, 0.0, ops.exp(ops.minimum(z - m2, 0.0)))
    s2 = ops.sum(e2, axis=-1, keepdims=True)
    # s2 >= 1 and s1 - e1 >= 1 wherever they are used (each holds a term exp(0) = 1);
    # the maxima only keep the unused branch of the `where` finite (O = 1, unique max).
    loo_max = m2 + ops.log(ops.maximum(s2, 1.0))
    loo_other = m1 + ops.log(ops.maximum(s1 - e1, 1.0))
    log1m_w = ops.where(unique_max, loo_max, loo_other) - lse
    return log_w, log1m_w


def neural_nearest_neighbors(distances, log_temperature, k):
    """Continuous relaxation of the k nearest neighbours (Ploetz & Roth, NeurIPS 2018).

    Args:
        distances: float `[..., M, O]`, the (squared) distance of each of M queries to
            each of its O candidates. Only differences within a row matter.
        log_temperature: float, broadcastable to `[..., M, 1]`: the log of the
            temperature T of each query; clamped to
            `[LOG_TEMPERATURE_MIN, LOG_TEMPERATURE_MAX]` = [-20, 20].
        k: number of neighbour distributions, an integer >= 1.

    Returns:
        `W`, float `[..., M, O, k]`: `W[..., m, :, j]` is the relaxed (j+1)-th nearest
        neighbour of query m, non-negative and summing to 1 over the O candidates; it
        tends to the one-hot (j+1)-th nearest candidate as T -> 0 (for distinct distances,
        k <= O) and to the uniform distribution as T -> inf.

    Raises:
        ValueError: k is not an integer >= 1.

    Example:
        >>> d = keras.ops.convert_to_tensor([[0.3, 0.1, 0.2]])
        >>> w = neural_nearest_neighbors(d, -10.0, k=2)   # ~ [[[0, 1, 0]], [[0, 0, 1]]]^T
    """
    return ops.stack(neighbor_weight_list(distances, log_temperature, k), axis=-1)


def neighbor_weight_list(distances, log_temperature, k):
    """`neural_nearest_neighbors` as a list of k tensors `[..., M, O]` (no stacked copy)."""
    try:
        k_int = operator.index(k)  # Python and numpy integers, not floats
    except TypeError:
        k_int = 0
    if isinstance(k, bool) or k_int < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    k = k_int
    d = ops.convert_to_tensor(distances)
    if d.dtype not in ("float32", "float64"):
        d = ops.cast(d, "float32")
    log_t = ops.clip(ops.cast(log_temperature, d.dtype), LOG_TEMPERATURE_MIN, LOG_TEMPERATURE_MAX)
    inverse_t = ops.exp(-log_t)
    # Relative to the nearest candidate: alpha <= 0 with maximum 0 (softmax is shift invariant).
    # The nearest candidates get exactly 0, so a row of infinite distances (candidates masked
    # with inf, all of them) is uniform rather than inf - inf = NaN.
    nearest = ops.min(d, axis=-1, keepdims=True)
    alpha = ops.maximum(ops.where(d == nearest, ops.zeros_like(d), nearest - d), -ALPHA_RANGE)
    weights = []
    for j in range(k):
        log_w, log1m_w = _log_softmax_and_log1m(alpha * inverse_t)
        weights.append(ops.exp(log_w))
        if j + 1 < k:
            alpha = alpha + log1m_w
            alpha = ops.maximum(alpha - ops.max(alpha, axis=-1, keepdims=True), -ALPHA_RANGE)
    return weights
