"""w2v-BERT 2.0 (transformers' Wav2Vec2BertModel) as a backbone: its input features, in torch.

The model has no CNN: it reads what SeamlessM4TFeatureExtractor computes on the host in numpy:
80 Kaldi-style log-mel filterbanks per 25 ms frame every 10 ms (the waveform at 16-bit scale, DC
removal, pre-emphasis 0.97, Povey window, 512-point power spectrum, mel floor 2^-23), each bin
normalised over the utterance (mean, variance with N - 1), and pairs of frames stacked to 160 dims
every 20 ms. W2vBertFbank computes the same in the model, batched with a mask like a waveform
backbone's CNN, so training, extraction, DDP and the ONNX graph all take waveforms. Per frame the
chain DC removal -> pre-emphasis -> window -> DFT is linear, so it is one (400, 514) matrix: the
frames (one gather) times that matrix, which exports to ONNX as Gather and MatMul.

Utterances end where the extractor's attention mask ends: an odd last frame (paired with padding
there) is dropped, so a row of N frames gives N // 2 stacked frames; a batch pads to the longest row.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from voxadapt.errors import VoxadaptError, located
from voxadapt.fileio import read_json

SAMPLE_RATE = 16000
FRAME, HOP, FFT = 400, 160, 512
NUM_MELS, STRIDE = 80, 2
PREEMPHASIS = 0.97
MEL_FLOOR = 1.192092955078125e-07  # float32 epsilon: the extractor's floor on the mel energies
VARIANCE_EPS = 1e-7
MIN_SAMPLES = FRAME + HOP  # two frames: one stacked pair (and a per-bin variance with N - 1 defined)
FEATURE_DIM = NUM_MELS * STRIDE


def kaldi_mel(hz: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(hz / 700.0)


def mel_filters() -> torch.Tensor:
    """(FFT // 2 + 1, NUM_MELS) float64: triangles in the Kaldi mel scale between 20 Hz and the
    Nyquist frequency, unnormalised (the extractor's mel_filter_bank(..., mel_scale='kaldi',
    triangularize_in_mel_space=True))."""
    bins = kaldi_mel(torch.arange(FFT // 2 + 1, dtype=torch.float64) * (SAMPLE_RATE / FFT))
    low, high = kaldi_mel(torch.tensor([20.0, SAMPLE_RATE / 2], dtype=torch.float64)).tolist()
    edges = torch.linspace(low, high, NUM_MELS + 2, dtype=torch.float64)
    width = edges.diff()
    slopes = edges[None, :] - bins[:, None]
    down, up = -slopes[:, :-2] / width[:-1], slopes[:, 2:] / width[1:]
    return torch.minimum(down, up).clamp(min=0)


def frame_transform() -> torch.Tensor:
    """(2 * (FFT // 2 + 1), FRAME): a frame of float samples -> real and imaginary parts of its
    DFT after 16-bit scaling, DC removal, pre-emphasis and the Povey window, composed in float64."""
    eye = torch.eye(FRAME, dtype=torch.float64)
    dc = eye - 1.0 / FRAME
    emphasis = eye - PREEMPHASIS * torch.diag(torch.ones(FRAME - 1, dtype=torch.float64), -1)
    emphasis[0, 0] = 1 - PREEMPHASIS  # the first sample has no predecessor: scaled instead
    n = torch.arange(FRAME, dtype=torch.float64)
    window = (0.5 - 0.5 * torch.cos(2 * math.pi * n / (FRAME - 1))) ** 0.85  # Povey: symmetric Hann^0.85
    k = torch.arange(FFT // 2 + 1, dtype=torch.float64)[:, None]
    angle = 2 * math.pi * k * n[None, :] / FFT
    dft = torch.cat([torch.cos(angle), -torch.sin(angle)])
    return dft @ torch.diag(window) @ emphasis @ dc * 2.0**15


def frame_counts(samples: torch.Tensor) -> torch.Tensor:
    """Filterbank frames (no centring) of utterances of `samples` samples."""
    return torch.div(samples - FRAME, HOP, rounding_mode="floor") + 1


class W2vBertFbank(nn.Module):
    """(B, S) waveforms in [-1, 1] with per-row lengths (None: all S) -> (B, T, 160) stacked
    normalised filterbanks and a (B, T) mask (None without lengths).

    The spectrum is computed in float64, as the extractor's numpy FFT is: per-bin normalisation
    divides by the bin's spread over the utterance, which for steady sounds is small enough to
    turn float32 rounding in weak bins into errors of 0.1. Autocast (bf16 training) is off here."""

    def __init__(self) -> None:
        super().__init__()
        # Constants of the feature definition, rebuilt on construction: not weights, not saved.
        self.register_buffer("transform", frame_transform().T.contiguous(), persistent=False)  # (FRAME, 2K)
        self.register_buffer("mel", mel_filters(), persistent=False)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        if (wav.shape[1] if lengths is None else int(lengths.min())) < MIN_SAMPLES:
            raise VoxadaptError(f"an utterance shorter than {MIN_SAMPLES} samples ({MIN_SAMPLES / SAMPLE_RATE * 1000:.0f} ms) "
                                "gives a w2v-bert backbone no filterbank frame pair; drop or pad it")
        with torch.autocast(wav.device.type, enabled=False):
            return self._features(wav, lengths)

    def _features(self, wav: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        n_all = (wav.shape[1] - FRAME) // HOP + 1
        index = torch.arange(n_all, device=wav.device)[:, None] * HOP + torch.arange(FRAME, device=wav.device)[None, :]
        spectrum = wav.double()[:, index] @ self.transform  # (B, N, 2K): one gather of the frames, one product
        re, im = spectrum.chunk(2, dim=-1)
        logmel = torch.log(torch.clamp((re * re + im * im) @ self.mel, min=MEL_FLOOR))  # (B, N, 80)
        n = torch.full((len(wav),), n_all, device=wav.device) if lengths is None else frame_counts(lengths.to(wav.device))
        valid = (torch.arange(n_all, device=wav.device)[None, :] < n[:, None]).to(logmel.dtype)[:, :, None]
        count = n[:, None, None].to(logmel.dtype)
        mean = (logmel * valid).sum(1, keepdim=True) / count
        var = (((logmel - mean) * valid) ** 2).sum(1, keepdim=True) / (count - 1)
        feats = ((logmel - mean) / torch.sqrt(var + VARIANCE_EPS) * valid).to(wav.dtype)
        pairs = n_all // STRIDE
        feats = feats[:, : pairs * STRIDE].reshape(len(wav), pairs, FEATURE_DIM)
        if lengths is None:
            return feats, None
        return feats, torch.arange(pairs, device=wav.device)[None, :] < torch.div(n, STRIDE, rounding_mode="floor")[:, None]


def check_architecture(config) -> None:  # noqa: ANN001 - a Wav2Vec2BertConfig
    """The features W2vBertFbank computes are the only ones the model can read."""
    if config.feature_projection_input_dim != FEATURE_DIM:
        raise VoxadaptError(f"a w2v-bert backbone reads {NUM_MELS} filterbanks stacked in pairs ({FEATURE_DIM} dims); "
                            f"its config has feature_projection_input_dim {config.feature_projection_input_dim}: "
                            f"set it to {FEATURE_DIM}")


def check_preprocessor(model_dir: Path) -> None:
    """A w2v-BERT directory's preprocessor_config.json must describe the features computed here."""
    pre = model_dir / "preprocessor_config.json"
    fix = ("use the directory a hub download of facebook/w2v-bert-2.0 gives (config.json, model.safetensors, "
           "preprocessor_config.json)")
    if not pre.is_file():
        raise VoxadaptError(located(pre, None, "missing, so nothing says which features the w2v-bert model reads", fix))
    data = read_json(pre, fix)
    data = data if isinstance(data, dict) else {}
    # (what voxadapt computes, the extractor's default for a key the file leaves out)
    want = {"feature_extractor_type": ("SeamlessM4TFeatureExtractor", None), "sampling_rate": (SAMPLE_RATE, SAMPLE_RATE),
            "num_mel_bins": (NUM_MELS, NUM_MELS), "stride": (STRIDE, STRIDE)}
    for key, (value, default) in want.items():
        got = data.get(key, default)
        if got != value:
            raise VoxadaptError(located(pre, None, f"{key} is {got!r}; voxadapt computes the features of {key} {value!r} "
                                        "only", fix))
