"""ONNX export of waveform -> embedding (SSL backbone with adapters, back-end), dynamic length.

Weight parametrizations are folded first: LoRA deltas (W + s B A) and the backbone's weight-norm
positional convolution become plain weights. The TorchScript-based exporter keeps the input
length dynamic through the CNN and the relative position bias; the graph takes one utterance
(1, samples) float32 at the model's sample rate, scales it to the configured level, and returns
(1, embed_dim).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from voxadapt.errors import VoxadaptError
from voxadapt.fileio import atomic_path
from voxadapt.models.adapters import merge_lora
from voxadapt.models.speaker import SpeakerModel


class WaveformToEmbedding(nn.Module):
    """The model behind the level normalisation every embedding gets (data/conditioning.py), so the
    graph takes waveforms as recorded, as `voxadapt embed` does."""

    def __init__(self, model: SpeakerModel, level_dbfs: float | None):
        super().__init__()
        self.model = model
        self.gain = None if level_dbfs is None else 10 ** (level_dbfs / 20)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if self.gain is not None:
            wav = wav * (self.gain / wav.pow(2).mean(dim=1, keepdim=True).sqrt().clamp_min(1e-12))
        states, _ = self.model.backbone(wav)
        return self.model.backend(states, None)


def export_onnx(model: SpeakerModel, out: Path, sample_rate: int, level_dbfs: float | None) -> float:
    """Write `out` and check it with onnxruntime; returns the cosine between ONNX and PyTorch."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise VoxadaptError("ONNX export needs onnx and onnxruntime (pip install -r requirements.txt)") from None
    wrapped = WaveformToEmbedding(copy.deepcopy(model).cpu(), level_dbfs)
    merge_lora(wrapped)
    for p in wrapped.parameters():
        p.requires_grad_(False)
    wrapped.eval()  # the exporter restores the wrapper's mode recursively: it must be eval already
    example = torch.randn(1, 3 * sample_rate) * 0.1
    with atomic_path(out) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes about Python ints from shapes (kept dynamic here)
        torch.onnx.export(wrapped, (example,), str(tmp), input_names=["waveform"], output_names=["embedding"],
                          dynamic_axes={"waveform": {1: "samples"}}, dynamo=False, opset_version=17)
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        probe = torch.randn(1, int(4.7 * sample_rate)) * 0.1  # another length than the traced one
        a = session.run(None, {"waveform": probe.numpy()})[0][0]
        b = wrapped(probe).numpy()[0]
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
