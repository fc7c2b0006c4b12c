"""Training: data, corruption, losses, optimizers, the loop and the parts it runs on."""
