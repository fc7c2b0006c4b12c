"""The SavedModel export: a float32 and a uint8 signature, batch and size dynamic."""

from bfcnn.export.signature import INPUT_NAME, OUTPUT_NAME, model_channels


def write_saved_model(model, path) -> None:
    """Writes a SavedModel with the `serving_default` (float32) and `denoise_uint8` signatures.

    Both take `image` [B, H, W, C] with B, H and W dynamic and return `denoised`.
    """
    import keras
    import tensorflow as tf

    channels = model_channels(model)

    def serve_float(image):
        return {OUTPUT_NAME: model(image, training=False)}

    def serve_uint8(image):
        out = model(tf.cast(image, tf.float32), training=False)
        # tf.round rounds half to even, as numpy does in bfcnn.evaluation.to_uint8.
        return {OUTPUT_NAME: tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve_float,
                         input_signature=[tf.TensorSpec([None, None, None, channels], tf.float32, INPUT_NAME)])
    archive.add_endpoint("denoise_uint8", serve_uint8,
                         input_signature=[tf.TensorSpec([None, None, None, channels], tf.uint8, INPUT_NAME)])
    archive.write_out(str(path), verbose=False)
