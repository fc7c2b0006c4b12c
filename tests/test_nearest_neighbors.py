"""The continuous kNN relaxation: hard limit, normalisation, gradients, TFLite."""

import numpy as np
import pytest
import tensorflow as tf

from bfcnn.ops import LOG_TEMPERATURE_MAX, LOG_TEMPERATURE_MIN, neural_nearest_neighbors


def reference_weights(distances, temperature, k):
    """float64 numpy version of the recursion, for moderate temperatures."""
    alpha = -np.asarray(distances, np.float64)
    out = []
    for _ in range(k):
        z = alpha / temperature
        w = np.exp(z - z.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        out.append(w)
        alpha = alpha + np.log1p(-w)
    return np.stack(out, -1)


def distinct_distances(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.permutation(np.prod(shape)).reshape(shape) / np.prod(shape)).astype("float32")


def test_hard_limit_is_the_sorted_neighbours():
    d = distinct_distances((3, 40, 25))
    values = np.random.default_rng(1).normal(size=(3, 25, 6)).astype("float32")
    w = np.asarray(neural_nearest_neighbors(d, -16.0, k=7))
    order = np.argsort(d, axis=-1)
    for j in range(7):
        assert np.array_equal(np.argmax(w[..., j], axis=-1), order[..., j])
        aggregated = np.einsum("bmo,bof->bmf", w[..., j], values)
        expected = np.take_along_axis(values, order[..., j][..., None], axis=1)
        np.testing.assert_allclose(aggregated, expected, atol=1e-4, rtol=0)


def test_logit_gaps_beyond_float_precision_keep_distinct_neighbours():
    # w_1 rounds to exactly 1 here; log(1 - w) must still tell the later neighbours apart.
    d = np.array([[0.0, 30.0, 60.0, 90.0, 120.0]], "float32")
    w = np.asarray(neural_nearest_neighbors(d, -5.0, k=4))[0]
    np.testing.assert_array_equal(w, np.eye(5)[:, :4])


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_distributions_sum_to_one_and_are_non_negative(scale):
    d = distinct_distances((4, 30, 20), seed=2) * scale
    for log_t in list(np.linspace(np.log(1e2), LOG_TEMPERATURE_MIN, 9)) + [LOG_TEMPERATURE_MIN - 10]:
        w = np.asarray(neural_nearest_neighbors(d, float(log_t), k=5))
        assert np.all(w >= 0.0)
        np.testing.assert_allclose(w.sum(axis=-2), 1.0, atol=1e-5)


def test_large_temperature_gives_uniform_weights():
    d = distinct_distances((2, 10, 16), seed=3) * 10.0
    w = np.asarray(neural_nearest_neighbors(d, LOG_TEMPERATURE_MAX + 5.0, k=4))
    np.testing.assert_allclose(w, 1.0 / 16.0, atol=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_matches_float64_reference(temperature):
    d = distinct_distances((5, 12), seed=4)
    w = np.asarray(neural_nearest_neighbors(d, float(np.log(temperature)), k=6))
    np.testing.assert_allclose(w, reference_weights(d, temperature, 6), atol=2e-6)


def test_per_query_temperature_broadcasts():
    d = distinct_distances((2, 3, 8), seed=5)
    log_t = np.log(np.array([0.1, 1.0, 10.0], "float32")).reshape(1, 3, 1)
    w = np.asarray(neural_nearest_neighbors(d, np.broadcast_to(log_t, (2, 3, 1)), k=3))
    for m, t in enumerate([0.1, 1.0, 10.0]):
        np.testing.assert_allclose(w[:, m], reference_weights(d[:, m], t, 3), atol=2e-6)


@pytest.mark.parametrize("temperature", [1.0, 1e-3, 1e-6])
def test_gradients_are_finite(temperature):
    rng = np.random.default_rng(6)
    # Includes a near tie (1e-7 apart) and candidates far enough for w to round to 0 or 1.
    d = np.concatenate([distinct_distances((4, 12), seed=7),
                        np.array([[0.0, 1e-7, 5.0, 500.0] + [1e3] * 8] * 4, "float32")], axis=0)
    d = tf.Variable(d)
    log_t = tf.Variable(np.full((8, 1), np.log(temperature), "float32"))
    probe = rng.normal(size=(8, 12, 7)).astype("float32")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(neural_nearest_neighbors(d, log_t, k=7) * probe)
    grads = tape.gradient(loss, [d, log_t])
    for grad in grads:
        assert grad is not None and np.all(np.isfinite(grad.numpy()))


def test_gradient_matches_finite_differences():
    d = distinct_distances((1, 6), seed=8).astype("float64")
    probe = np.random.default_rng(9).normal(size=(1, 6, 3))
    x = tf.Variable(d)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(neural_nearest_neighbors(x, np.log(0.2), k=3) * probe)
    grad = tape.gradient(loss, x).numpy()
    h = 1e-6
    numeric = np.zeros_like(d)
    for o in range(6):
        e = np.zeros_like(d)
        e[0, o] = h
        plus = np.sum(reference_weights(d + e, 0.2, 3) * probe)
        minus = np.sum(reference_weights(d - e, 0.2, 3) * probe)
        numeric[0, o] = (plus - minus) / (2 * h)
    np.testing.assert_allclose(grad, numeric, atol=1e-5)


def test_ties_split_the_weight():
    d = np.array([[0.0, 0.0, 1.0, 2.0]], "float32")
    w = np.asarray(neural_nearest_neighbors(d, LOG_TEMPERATURE_MIN, k=2))[0]
    np.testing.assert_allclose(w[:, 0], [0.5, 0.5, 0.0, 0.0], atol=1e-6)


def test_single_candidate_and_infinite_distances_stay_finite():
    w = np.asarray(neural_nearest_neighbors(np.array([[3.0]], "float32"), 0.0, k=3))
    np.testing.assert_array_equal(w, np.ones((1, 1, 3)))
    w = np.asarray(neural_nearest_neighbors(np.array([[0.0, np.inf, 1.0]], "float32"), LOG_TEMPERATURE_MIN, k=3))
    assert np.all(np.isfinite(w))
    np.testing.assert_allclose(w[0, :, 0], [1.0, 0.0, 0.0])


def test_a_row_of_only_infinite_distances_is_uniform_not_nan():
    """Masking every candidate of a query with inf gave inf - inf = NaN for the whole row."""
    import tensorflow as tf

    d = tf.constant([[0.0, np.inf, 1.0, np.inf], [np.inf] * 4], tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(d)
        w = neural_nearest_neighbors(d, -2.0, k=2)
        loss = tf.reduce_sum(w * tf.constant([1.0, 2.0, 3.0, 4.0])[:, None])
    w = np.asarray(w)
    np.testing.assert_allclose(w[1], np.full((4, 2), 0.25), atol=1e-6)
    np.testing.assert_allclose(w[0].sum(axis=0), [1.0, 1.0], atol=1e-6)
    assert np.all(np.isfinite(np.asarray(tape.gradient(loss, d))[0, [0, 2]]))


def test_numpy_integer_k_is_accepted():
    d = distinct_distances((1, 5), seed=3)
    np.testing.assert_array_equal(np.asarray(neural_nearest_neighbors(d, 0.0, k=np.int64(2))),
                                  np.asarray(neural_nearest_neighbors(d, 0.0, k=2)))


@pytest.mark.parametrize("k", [0, -1, 2.0, True, "2"])
def test_bad_k_is_rejected(k):
    with pytest.raises(ValueError, match="k must be"):
        neural_nearest_neighbors(np.zeros((1, 3), "float32"), 0.0, k=k)


def test_tflite_builtin_ops_only():
    from ai_edge_litert.interpreter import Interpreter

    d = distinct_distances((1, 20, 9), seed=10) * 5.0
    log_t = np.linspace(-3, 1, 20, dtype="float32").reshape(1, 20, 1)
    fn = tf.function(lambda a, b: neural_nearest_neighbors(a, b, k=4))
    concrete = fn.get_concrete_function(tf.TensorSpec(d.shape, tf.float32), tf.TensorSpec(log_t.shape, tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interpreter = Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    inputs = sorted(interpreter.get_input_details(), key=lambda detail: detail["name"])
    interpreter.set_tensor(inputs[0]["index"], d)
    interpreter.set_tensor(inputs[1]["index"], log_t)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(out, np.asarray(fn(d, log_t)), atol=1e-6)
