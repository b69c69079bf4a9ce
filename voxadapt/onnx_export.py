"""ONNX export of waveform -> embedding (SSL backbone with adapters, pooling), dynamic length,
and the exported graph as an onnxruntime engine for extraction on a CPU.

Weight parametrizations are folded first: LoRA deltas (W + s B A) and the backbone's weight-norm
positional convolution become plain weights. The TorchScript-based exporter keeps the input
length dynamic through the CNN and the relative position bias; the graph takes one utterance
(1, samples) float32 at the model's sample rate, scales it to the configured level, and returns
(1, embed_dim).
"""

from __future__ import annotations

import copy
import logging
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from voxadapt.errors import VoxadaptError
from voxadapt.fileio import atomic_path
from voxadapt.models.adapters import merge_lora
from voxadapt.models.speaker import SpeakerModel

log = logging.getLogger(__name__)


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
        return self.model.pooling(states, None)


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
    probe = torch.randn(1, int(4.7 * sample_rate)) * 0.1  # another length than the traced one
    with torch.no_grad():
        b = wrapped(probe).numpy()[0]
    with atomic_path(out) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes about Python ints from shapes (kept dynamic here)
        torch.onnx.export(wrapped, (example,), str(tmp), input_names=["waveform"], output_names=["embedding"],
                          dynamic_axes={"waveform": {1: "samples"}}, dynamo=False, opset_version=17)
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        a = session.run(None, {"waveform": probe.numpy()})[0][0]
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


PARITY_COSINE = 0.9999  # an exported graph whose embedding differs more from PyTorch's is not used


class OnnxEmbedder:
    """The speaker model as an onnxruntime session, called as `embed_waveforms` calls the PyTorch
    model: (B, samples) waveforms (lengths per row, or None) -> (B, E) embeddings. The graph takes
    one utterance, so a batch runs row by row; on a CPU the extraction path sends one at a time."""

    def __init__(self, graph: Path, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"])

    @classmethod
    def exported(cls, model: SpeakerModel, sample_rate: int, threads: int) -> tuple[OnnxEmbedder, float]:
        """The model exported now (without level scaling: the extraction path conditions audio
        first), and the cosine of its embedding to PyTorch's on a probe."""
        with tempfile.TemporaryDirectory() as tmp:  # the session holds the graph: the file can go
            path = Path(tmp) / "embedder.onnx"  # a temporary graph, not a package's model.onnx
            cosine = export_onnx(model, path, sample_rate, None)
            return cls(path, threads), cosine

    def __call__(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        rows = [wav[i:i + 1, : wav.shape[1] if lengths is None else int(lengths[i])].numpy() for i in range(len(wav))]
        return torch.from_numpy(np.concatenate([self.session.run(None, {"waveform": r})[0] for r in rows]))


def extraction_engine(model: SpeakerModel, device: str, engine: str, sample_rate: int, threads: int,
                      graph: Path | None = None) -> Callable[..., torch.Tensor]:
    """What embeds on `device`: on a CPU with engine 'auto' or 'onnx', the ONNX graph through
    onnxruntime (1.2-1.4x faster than eager PyTorch, BENCHMARKS.md): `graph` when given (a
    package's model.onnx, parity-checked when it was packaged; its level scaling of already
    conditioned audio is a no-op), else the model exported now, used only if the export works and
    its embedding equals PyTorch's (cosine >= PARITY_COSINE on a probe). Otherwise, and on a GPU,
    the PyTorch model: the graph is a speed-up, never a reason for extraction to fail."""
    if torch.device(device).type != "cpu":
        if engine == "onnx":
            raise VoxadaptError(f"the onnx engine runs on a CPU, not on {device}: use engine auto or torch")
        return model
    if engine == "torch":
        return model
    if graph is not None:
        return OnnxEmbedder(graph, threads)
    try:
        onnx, cosine = OnnxEmbedder.exported(model, sample_rate, threads)
    except Exception as e:  # noqa: BLE001  # the exporter's failures have no common type
        reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        log.warning("the model could not be exported to ONNX (%s): using PyTorch (extract.engine torch "
                    "skips the attempt)", reason)
        return model
    if cosine < PARITY_COSINE:
        log.warning("the ONNX graph's embedding differs from PyTorch's (cosine %.6f): using PyTorch", cosine)
        return model
    return onnx
