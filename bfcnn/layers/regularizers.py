"""Kernel regularizers for bias-free denoisers: soft orthogonality and the centre-away penalty.

Soft orthogonality (Bansal, Chen, Wang, "Can we gain more from orthogonality
regularizations in training deep CNNs?", NeurIPS 2018) reshapes a convolution kernel
`[k, k, c_in, c_out]` to a matrix `W` of `[k*k*c_in, c_out]` and penalizes `W^T W` away
from a diagonal (`SoftOrthogonal`: the filters are decorrelated) or from the identity
(`SoftOrthonormal`: decorrelated and of unit norm). `CenterAway` weights an L1 / L2
penalty with a Gaussian centred on the kernel window, so weight at the centre costs most
and kernels spread out: a larger effective receptive field (Luo, Li, Urtasun, Zemel,
"Understanding the effective receptive field in deep convolutional neural networks",
NIPS 2016, show it is much smaller than the theoretical one and Gaussian-shaped).

None of them adds anything to the network itself, so a bias-free model stays bias-free.
`get(spec)` turns a config value (`None`, a name, a mapping with `type`, or a list of
them) into a regularizer.
"""

import inspect
from typing import Any, Mapping, Sequence

import keras
from keras import ops

from bfcnn.errors import allowed, did_you_mean
from bfcnn.layers.arguments import check_number


def _as_matrix(x):
    """The weight as `[fan_in, c_out]` in float32: every axis but the last is flattened."""
    x = ops.cast(x, "float32")
    if len(x.shape) == 0:
        return ops.reshape(x, (1, 1))
    return ops.reshape(x, (-1, x.shape[-1]))


@keras.saving.register_keras_serializable(package="bfcnn")
class SoftOrthogonal(keras.regularizers.Regularizer):
    """`weight * ||W^T W * (1 - I)||_F^2`: the filters' (columns') mutual correlations.

    `W` is the kernel reshaped to `[k*k*c_in, c_out]` (any rank: every axis but the last is
    flattened). Only the off-diagonal entries of the Gram matrix are penalized, so the
    filters' norms are free: a variant of the soft orthogonality ("SO") of Bansal, Chen &
    Wang (NeurIPS 2018), whose penalty is `SoftOrthonormal`'s.

    Args:
        weight: factor of the penalty, >= 0.

    Example:
        >>> keras.layers.Conv2D(32, 3, use_bias=False, kernel_regularizer=SoftOrthogonal(1e-4))
    """

    def __init__(self, weight=1e-4):
        self.weight = check_number("weight", weight, 0.0)

    def __call__(self, x):
        w = _as_matrix(x)
        gram = ops.matmul(ops.transpose(w), w)
        off_diagonal = gram * (1.0 - ops.eye(gram.shape[0], dtype="float32"))
        return self.weight * ops.sum(ops.square(off_diagonal))

    def get_config(self):
        return {"weight": self.weight}


@keras.saving.register_keras_serializable(package="bfcnn")
class SoftOrthonormal(keras.regularizers.Regularizer):
    """`weight * ||W^T W - I||_F^2`: the filters decorrelated and of unit norm.

    `W` is the kernel reshaped to `[k*k*c_in, c_out]` (Bansal et al., NeurIPS 2018, "SO").
    When `c_out > k*k*c_in` the Gram matrix cannot reach the identity and the penalty has a
    positive floor; its gradient still pushes towards the closest attainable matrix.

    Args:
        weight: factor of the penalty, >= 0.
    """

    def __init__(self, weight=1e-4):
        self.weight = check_number("weight", weight, 0.0)

    def __call__(self, x):
        w = _as_matrix(x)
        gram = ops.matmul(ops.transpose(w), w)
        return self.weight * ops.sum(ops.square(gram - ops.eye(gram.shape[0], dtype="float32")))

    def get_config(self):
        return {"weight": self.weight}


@keras.saving.register_keras_serializable(package="bfcnn")
class CenterAway(keras.regularizers.Regularizer):
    """An L1 / L2 kernel penalty weighted by a centred Gaussian over the kernel window.

    For a kernel `[kh, kw, c_in, c_out]` the penalty is
    `sum_ij g_ij * (l1 * |W_ij..| + l2 * W_ij..^2)` with
    `g_ij = exp(-(di^2 + dj^2) / (2 s^2))`, `di, dj` the offsets from the window's centre
    in pixels and `s = sigma * max(kh, kw)` pixels: weight at the centre costs the full
    L1 / L2 price (`g = 1` there, for odd sizes), weight at the border less, so the
    optimizer moves weight away from the centre and the effective receptive field grows
    (Luo et al., NIPS 2016). Weights of another rank (dense kernels, 1-D vectors) have no
    spatial window and get the plain L1 / L2 penalty (`g = 1`).

    Args:
        l1: factor of the weighted L1 term, >= 0.
        l2: factor of the weighted L2 term, >= 0.
        sigma: standard deviation of the Gaussian in units of the kernel size, > 0
            (0.25: for a 3x3 kernel an edge pixel costs 0.41 and a corner 0.17 of the centre).
    """

    def __init__(self, l1=0.0, l2=0.0, sigma=0.25):
        self.l1 = check_number("l1", l1, 0.0)
        self.l2 = check_number("l2", l2, 0.0)
        self.sigma = check_number("sigma", sigma, 0.0, strict=True, hint="in units of the kernel size")

    def window(self, kernel_height: int, kernel_width: int):
        """The Gaussian weights `[kh, kw]`, 1 at the centre of an odd window."""
        s = self.sigma * max(kernel_height, kernel_width)
        di = ops.arange(kernel_height, dtype="float32") - (kernel_height - 1) / 2.0
        dj = ops.arange(kernel_width, dtype="float32") - (kernel_width - 1) / 2.0
        squared = ops.square(di)[:, None] + ops.square(dj)[None, :]
        return ops.exp(-squared / (2.0 * s * s))

    def __call__(self, x):
        x = ops.cast(x, "float32")
        if len(x.shape) == 4:
            g = ops.reshape(self.window(x.shape[0], x.shape[1]), (x.shape[0], x.shape[1], 1, 1))
        else:
            g = ops.ones((), dtype="float32")
        penalty = ops.zeros((), dtype="float32")
        if self.l1:
            penalty = penalty + self.l1 * ops.sum(g * ops.abs(x))
        if self.l2:
            penalty = penalty + self.l2 * ops.sum(g * ops.square(x))
        return penalty

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2, "sigma": self.sigma}


@keras.saving.register_keras_serializable(package="bfcnn")
class RegularizerSum(keras.regularizers.Regularizer):
    """The sum of several regularizers (what a list in a config becomes).

    Args:
        regularizers: regularizer instances or their serialized configs.
    """

    def __init__(self, regularizers):
        if isinstance(regularizers, (keras.regularizers.Regularizer, str, Mapping)):
            regularizers = [regularizers]
        try:
            items = [get(r, "regularizers") for r in regularizers]
        except TypeError:  # not iterable
            items = []
        if not items or any(r is None for r in items):
            raise ValueError(f"regularizers must be a non-empty list of regularizers, got {regularizers!r}")
        self.regularizers = items

    def __call__(self, x):
        total = self.regularizers[0](x)
        for regularizer in self.regularizers[1:]:
            total = total + regularizer(x)
        return total

    def get_config(self):
        return {"regularizers": [keras.regularizers.serialize(r) for r in self.regularizers]}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# Config name -> class; every constructor argument is a config key of that type.
REGULARIZERS = {
    "soft_orthogonal": SoftOrthogonal,
    "soft_orthonormal": SoftOrthonormal,
    "center_away": CenterAway,
    "l1": keras.regularizers.L1,
    "l2": keras.regularizers.L2,
}


def _arguments(cls) -> list:
    return [n for n in inspect.signature(cls.__init__).parameters if n != "self"]


def _from_mapping(spec: Mapping, key: str):
    if "type" not in spec:
        raise ValueError(f"{key} needs a 'type'; allowed: {allowed(REGULARIZERS)}")
    name = spec["type"]
    if name not in REGULARIZERS:
        raise ValueError(f"unknown {key} type {name!r}{did_you_mean(name, REGULARIZERS)}; "
                         f"allowed: {allowed(REGULARIZERS)}")
    cls = REGULARIZERS[name]
    arguments = _arguments(cls)
    kwargs = {}
    for option, value in spec.items():
        if option == "type":
            continue
        if option not in arguments:
            raise ValueError(f"unknown key '{option}' for {key} type {name!r}{did_you_mean(option, arguments)}; "
                             f"allowed: {allowed(['type', *arguments])}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} ({name}): {option} must be a number, got {value!r}")
        kwargs[option] = float(value)
    try:
        return cls(**kwargs)
    except ValueError as error:
        raise ValueError(f"{key} ({name}): {error}") from None


def get(spec: Any, key: str = "kernel_regularizer"):
    """A regularizer from a config value.

    Args:
        spec: `None` (no regularizer); a type name (`"soft_orthogonal"`, default arguments);
            a mapping `{type: soft_orthonormal, weight: 1.0e-4}` whose other keys are the
            type's constructor arguments; a list of names / mappings (their penalties are
            summed by a `RegularizerSum`; an empty list is `None`); or a Keras regularizer
            instance, returned as is (or its `keras.regularizers.serialize` form).
        key: the config key, for error messages.

    Returns:
        A `keras.regularizers.Regularizer`, or None.

    Raises:
        ValueError: an unknown type or key (with a close match and the allowed values), a
            value of the wrong type or out of range.

    Example:
        >>> get([{"type": "soft_orthonormal", "weight": 1e-4}, {"type": "center_away", "l2": 1e-5}])
    """
    if spec is None or isinstance(spec, keras.regularizers.Regularizer):
        return spec
    if isinstance(spec, Mapping) and "class_name" in spec:  # keras.regularizers.serialize's form
        return keras.regularizers.get(spec)
    if isinstance(spec, str):
        if spec not in REGULARIZERS:
            try:  # a name Keras knows ("L2", "orthogonal_regularizer")
                return keras.regularizers.get(spec)
            except ValueError:
                pass
        return _from_mapping({"type": spec}, key)
    if isinstance(spec, Mapping):
        return _from_mapping(spec, key)
    if isinstance(spec, Sequence):
        if any(isinstance(item, (list, tuple)) for item in spec):
            raise ValueError(f"{key} lists may not be nested, got {spec!r}")
        items = [get(item, key) for item in spec]
        if not items:
            return None
        return items[0] if len(items) == 1 else RegularizerSum(items)
    raise ValueError(f"{key} must be null, a name, a mapping with 'type' or a list of them; got {spec!r} "
                     f"(types: {allowed(REGULARIZERS)})")
