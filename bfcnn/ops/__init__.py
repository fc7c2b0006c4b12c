"""Differentiable operations used by the layers: the continuous nearest-neighbour relaxation."""

from bfcnn.ops.nearest_neighbors import (
    LOG_TEMPERATURE_MAX,
    LOG_TEMPERATURE_MIN,
    neural_nearest_neighbors,
)

__all__ = ["LOG_TEMPERATURE_MAX", "LOG_TEMPERATURE_MIN", "neural_nearest_neighbors"]
