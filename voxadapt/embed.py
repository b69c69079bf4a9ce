"""Embedding whole utterances: long ones in overlapping chunks, batches grouped by length."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from voxadapt.config import ExtractConfig
from voxadapt.data.conditioning import condition


def chunk_bounds(n: int, sr: int, opts: ExtractConfig) -> list[tuple[int, int]]:
    """Sample ranges covering an utterance of `n` samples; one range when it is short enough."""
    size = int(opts.max_chunk_seconds * sr)
    if n <= size:
        return [(0, n)]
    step = size - int(opts.chunk_overlap_seconds * sr)
    starts = list(range(0, n - size, step)) + [n - size]  # the last chunk ends exactly at the end
    return [(s, s + size) for s in starts]


def probe_waveforms(wavs: Sequence[np.ndarray], sr: int, opts: ExtractConfig) -> list[np.ndarray]:
    """Utterances of the set as an engine sees them (conditioned, cut to one chunk): what an int8
    engine is checked on (onnx_export.int8_or_fp32)."""
    return [condition(np.asarray(w, dtype=np.float32), sr, opts)[: int(opts.max_chunk_seconds * sr)] for w in wavs]


@torch.inference_mode()
def embed_waveforms(model: Callable[..., torch.Tensor], wavs: Sequence[np.ndarray], sr: int, opts: ExtractConfig,
                    device: str = "cpu") -> np.ndarray:
    """(N, E) float32 embeddings; a chunked utterance gets the mean of its chunk embeddings.
    `model` is the PyTorch model or an engine called like it (onnx_export.OnnxEmbedder)."""
    wavs = [condition(np.asarray(w, dtype=np.float32), sr, opts) for w in wavs]
    pieces = [(u, s, e) for u, w in enumerate(wavs) for s, e in chunk_bounds(len(w), sr, opts)]
    order = sorted(range(len(pieces)), key=lambda i: pieces[i][2] - pieces[i][1])
    on_gpu = torch.device(device).type == "cuda"
    seconds = opts.batch_seconds or (200.0 if torch.device(device).type != "cpu" else 0.0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_gpu and opts.precision == "bf16")
    budget = int(seconds * sr)
    size = [pieces[i][2] - pieces[i][1] for i in order]  # ascending
    sums: np.ndarray | None = None
    counts = np.zeros(len(wavs))
    start = 0
    while start < len(order):
        # Padding is computed and thrown away: a batch only holds pieces of nearly equal length.
        end = start + 1
        while (end < len(order) and (end - start + 1) * size[end] <= budget
               and size[end] <= (1 + opts.max_padding) * size[start]):
            end += 1
        batch = [pieces[i] for i in order[start:end]]
        lengths = torch.tensor([e - s for _, s, e in batch])
        x = torch.zeros(len(batch), int(lengths.max()))
        for row, (u, s, e) in enumerate(batch):
            x[row, : e - s] = torch.from_numpy(np.ascontiguousarray(wavs[u][s:e], dtype=np.float32))
        with autocast:
            emb = model(x.to(device, non_blocking=True), lengths.to(device) if len(batch) > 1 else None)
        emb = emb.float().cpu().numpy()
        if sums is None:
            sums = np.zeros((len(wavs), emb.shape[1]))
        for row, (u, _, _) in enumerate(batch):
            sums[u] += emb[row]
            counts[u] += 1
        start = end
    assert sums is not None
    return (sums / counts[:, None]).astype(np.float32)
