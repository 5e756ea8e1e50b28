"""Training: the train state and jitted step, checkpoints, metric writing, the stage pipeline."""
