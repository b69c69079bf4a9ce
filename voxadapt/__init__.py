"""voxadapt: a Kaldi-style speaker-verification recipe around self-supervised speech models."""

__version__ = "0.1.0"
