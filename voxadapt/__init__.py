"""voxadapt: a Kaldi-style speaker-verification recipe around self-supervised speech models."""

__version__ = "0.1.0"


def load(path, device: str = "cpu", method: str | None = None):  # noqa: ANN001, ANN201
    """Load a packaged model (see voxadapt.api): `.embed(wav_or_path)` and `.verify(a, b)`."""
    from voxadapt.api import load as _load

    return _load(path, device, method)
