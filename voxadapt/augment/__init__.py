"""Augmentation: noise/music/babble/RIR resources (stage 2) and online augmentation for training."""
