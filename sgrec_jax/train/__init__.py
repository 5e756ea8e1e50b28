"""Training infrastructure: train state and jitted step, checkpoints, metric writing."""
