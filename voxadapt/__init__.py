"""voxadapt: a Kaldi-style speaker-verification recipe around self-supervised speech models."""

__version__ = "0.1.0"


def load(path, device: str = "cpu", method: str | None = None, vad: bool | None = None):  # noqa: ANN001, ANN201
    """Load a packaged model (see voxadapt.api): `.embed(wav_or_path)` and `.verify(a, b)`."""
    from voxadapt.api import load as load_package

    return load_package(path, device, method, vad)
