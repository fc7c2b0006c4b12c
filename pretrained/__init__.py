"""The bfcnn model zoo's files: weights, TFLite models and model cards (data only)."""
