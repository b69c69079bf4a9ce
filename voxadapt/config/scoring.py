"""Config sections of x-vector extraction and scoring."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from voxadapt.config.checks import require

# ------------------------------------------------------------------------------- extraction


@dataclass
class ExtractConfig:
    max_chunk_seconds: float = 30.0  # longer utterances: overlapping chunks, embeddings averaged
    chunk_overlap_seconds: float = 3.0
    # Audio per batch (pieces grouped by length). 0: 200 s on a GPU, one piece per batch on a CPU,
    # where batching buys nothing and masks cost (BENCHMARKS.md).
    batch_seconds: float = 0.0
    max_padding: float = 0.05  # a batch's longest piece is at most this much longer than its shortest
    device: str = "auto"
    # On a CPU: 'onnx-int8' (default) embeds with the model exported to ONNX with int8 matrix
    # multiplies, used when its embeddings of utterances of the set match fp32's to cosine 0.999
    # (else the fp32 graph, with a warning); 'auto' and 'onnx' the fp32 graph (embeddings equal to
    # PyTorch's to cosine 0.9999); 'torch' eager PyTorch. GPUs always embed with PyTorch.
    # int8 is the default because its EER cost measured nothing (docs/extraction_engines.md).
    engine: Literal["auto", "torch", "onnx", "onnx-int8"] = "onnx-int8"
    num_threads: int = 0  # torch (or onnxruntime) threads per extraction job; 0: torch's default
    # On a GPU, bf16 autocast (embeddings within cosine 0.9999 of fp32's); CPUs always embed in fp32.
    precision: Literal["fp32", "bf16"] = "fp32"
    # Every input is scaled to this RMS level (dB re full scale) so embeddings do not depend on
    # recording level; the embedded corpus's median is -25 dBFS. null: embed as recorded.
    level_dbfs: float | None = -26.0
    vad: bool = False  # energy VAD first (data/conditioning.py): silence and pauses do not move the embedding

    def __post_init__(self) -> None:
        require(self.max_chunk_seconds >= 1.0, "max_chunk_seconds must be >= 1")
        require(0 <= self.chunk_overlap_seconds < self.max_chunk_seconds, "need 0 <= chunk_overlap < max_chunk")
        require(self.batch_seconds == 0 or self.batch_seconds >= self.max_chunk_seconds,
                 "batch_seconds must be 0 (auto) or >= max_chunk_seconds")
        require(self.max_padding >= 0, "max_padding must be >= 0")
        require(self.level_dbfs is None or -60 <= self.level_dbfs <= -3, "level_dbfs must be null or in [-60, -3]")


# ---------------------------------------------------------------------------------- scoring


@dataclass
class ScoringConfig:
    """Stages 6-7: back-ends, calibration and metrics."""

    # snorm: AS-norm's formula with the statistics of the whole cohort (no top-N selection)
    methods: list[Literal["cosine", "asnorm", "snorm", "plda"]] = field(default_factory=lambda: ["cosine", "asnorm", "plda"])
    lda_dim: int = 200  # above the embedding dim or speakers - 1: that many kept, with a warning
    plda_iters: int = 10
    asnorm_top_n: int = 300
    # Calibration trials: a set with held-out speakers and a trial list (e.g. dev); empty: trials
    # of training speakers held out of the back-end (calibration_fraction of them).
    calibration_set: str = ""
    calibration_fraction: float = 0.1
    calibration_trials: int = 20000
    calibration_quality: bool = True  # log durations of both sides as quality measures
    # Quality measure functions: log durations, x-vector magnitudes and AS-norm cohort means of both
    # sides, each with its own weight (replaces the duration-aware form; needs the cohort).
    calibration_qmf: bool = False
    asnorm_cohort: str = ""  # x-vector .scp of the AS-norm cohort; empty: stage 6's training-speaker means
    p_targets: list[float] = field(default_factory=lambda: [0.01, 0.05])
    seed: int = 0

    @property
    def calibration_form(self) -> str:
        return "qmf" if self.calibration_qmf else "duration" if self.calibration_quality else "linear"

    def fingerprint(self, stage: int) -> dict:
        """The keys stage 6 (the back-end) or 7 (scoring) depends on: the AS-norm cohort is read by
        stage 7 only, so changing it keeps the back-end."""
        d = asdict(self)
        if stage == 6:
            del d["asnorm_cohort"]
        return d

    def __post_init__(self) -> None:
        require(len(self.methods) >= 1 and len(set(self.methods)) == len(self.methods), "methods: one or more, no repeats")
        require(self.lda_dim >= 1 and self.plda_iters >= 1 and self.asnorm_top_n >= 1, "lda_dim, plda_iters, "
                 "asnorm_top_n must be >= 1")
        require(0 < self.calibration_fraction < 0.5, "calibration_fraction must be in (0, 0.5)")
        require(self.calibration_trials >= 100, "calibration_trials must be >= 100")
        require(len(self.p_targets) >= 1 and all(0 < p < 1 for p in self.p_targets), "p_targets must be in (0, 1)")
