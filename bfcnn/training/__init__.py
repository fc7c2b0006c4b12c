"""Training: data, corruption, losses, loop."""
