"""Training: optimisation, regularisation, checkpoints, distributed set-up, the training loop."""
