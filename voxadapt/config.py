"""Typed experiment configs: one YAML per experiment, checked against dataclasses.

Unknown keys, wrong types and impossible values are errors naming the file and the dotted key,
never silent defaults. `--set a.b=value` overrides (run.sh options become such overrides).
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence, TypeVar, get_args, get_origin

import yaml

from voxadapt.errors import ConfigError

T = TypeVar("T")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


# ----------------------------------------------------------------------------------------- data


@dataclass
class SyntheticConfig:
    """The embedded corpus: pseudo-speakers synthesised with espeak-ng (see corpus/synthetic.py)."""

    num_train_speakers: int = 100
    num_dev_speakers: int = 10
    num_test_speakers: int = 20
    utts_per_speaker: int = 12
    min_duration: float = 2.0
    max_duration: float = 8.0
    num_trials: int = 6000
    target_fraction: float = 0.2
    dev_trials: int = 2000
    seed: int = 0  # the corpus has its own seed: training seeds vary over one fixed corpus

    def __post_init__(self) -> None:
        _require(self.num_train_speakers >= 2, "num_train_speakers must be >= 2")
        _require(self.num_test_speakers >= 2, "num_test_speakers must be >= 2")
        _require(self.num_dev_speakers == 0 or self.num_dev_speakers >= 2, "num_dev_speakers must be 0 or >= 2")
        _require(self.utts_per_speaker >= 2, "utts_per_speaker must be >= 2 (trials need target pairs)")
        _require(0.5 <= self.min_duration <= self.max_duration, "need 0.5 <= min_duration <= max_duration")
        _require(0.0 < self.target_fraction < 1.0, "target_fraction must be in (0, 1)")
        _require(self.num_trials >= 10 and self.dev_trials >= 10, "num_trials and dev_trials must be >= 10")


@dataclass
class VoxCelebConfig:
    vox1_root: str = ""  # holds wav/idXXXXX/<video>/<n>.wav (dev and test unpacked together)
    vox2_root: str = ""  # holds dev/aac/idXXXXX/<video>/<n>.m4a
    trials_dir: str = ""  # veri_test2.txt, list_test_all2.txt, list_test_hard2.txt; default: vox1_root
    # VoxCeleb2 ships AAC in .m4a, which libsndfile cannot read: wav.scp gets this decoding pipe,
    # so the user's files are never rewritten. {path} is replaced by the quoted file path.
    m4a_decode_cmd: str = "ffmpeg -nostdin -v error -i {path} -ac 1 -ar 16000 -f wav -"
    # If set, decode every .m4a once into FLAC under this directory instead (faster training).
    convert_dir: str = ""


@dataclass
class KaldiImportConfig:
    train_dir: str = ""
    test_dir: str = ""
    trials: str = ""


@dataclass
class DataConfig:
    corpus: Literal["synthetic", "voxceleb", "kaldi"] = "synthetic"
    sample_rate: int = 16000
    min_duration: float = 0.2  # shorter recordings are rejected by validation
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    voxceleb: VoxCelebConfig = field(default_factory=VoxCelebConfig)
    kaldi: KaldiImportConfig = field(default_factory=KaldiImportConfig)

    def __post_init__(self) -> None:
        _require(self.sample_rate in (8000, 16000, 22050, 24000, 44100, 48000), "sample_rate is not a usual rate")
        _require(self.min_duration > 0, "min_duration must be > 0")

    @property
    def train_set(self) -> str:
        return {"synthetic": "train", "voxceleb": "vox2_dev", "kaldi": "train"}[self.corpus]

    @property
    def dev_set(self) -> str | None:
        """Held-out speakers with a trial list, for the validation EER during training."""
        return "dev" if self.corpus == "synthetic" and self.synthetic.num_dev_speakers else None

    @property
    def test_sets(self) -> list[str]:
        return {"synthetic": ["test"], "voxceleb": ["vox1"], "kaldi": ["test"]}[self.corpus]

    @property
    def all_sets(self) -> list[str]:
        dev = [self.dev_set] if self.dev_set else []
        return [self.train_set, *dev, *self.test_sets]


# ------------------------------------------------------------------------------ augmentation


@dataclass
class AugmentConfig:
    """Stage 2 resources and the online augmentation (augment/online.py)."""

    musan_root: str = ""  # MUSAN (noise/, music/, speech/); empty: generated stand-ins
    rirs_root: str = ""  # RIRS_NOISES (simulated_rirs/, real_rirs_isotropic_noises/); empty: generated
    aug_prob: float = 0.6  # per example: augment with one of the kinds below, else leave clean
    weights: dict[str, float] = field(
        default_factory=lambda: {"reverb": 1.0, "noise": 1.0, "music": 1.0, "babble": 1.0})
    noise_snr: list[float] = field(default_factory=lambda: [0.0, 15.0])
    music_snr: list[float] = field(default_factory=lambda: [5.0, 15.0])
    babble_snr: list[float] = field(default_factory=lambda: [13.0, 20.0])
    babble_speakers: list[int] = field(default_factory=lambda: [3, 8])
    rir_normalize: bool = True  # reverberated output keeps the input's power (as Kaldi's wav-reverberate)
    speed_perturb: bool = True  # speeds below become new speakers (x3 classes)
    speeds: list[float] = field(default_factory=lambda: [0.9, 1.1])
    generated_noises: int = 45
    generated_music: int = 30
    generated_rirs: int = 200
    generated_seconds: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        _require(0.0 <= self.aug_prob <= 1.0, "aug_prob must be in [0, 1]")
        _require(set(self.weights) <= {"reverb", "noise", "music", "babble"},
                 "weights keys must be among reverb, noise, music, babble")
        _require(all(w >= 0 for w in self.weights.values()) and sum(self.weights.values()) > 0,
                 "weights must be >= 0 and not all zero")
        for name in ("noise_snr", "music_snr", "babble_snr"):
            lo_hi = getattr(self, name)
            _require(len(lo_hi) == 2 and lo_hi[0] <= lo_hi[1], f"{name} must be [low, high]")
        _require(len(self.babble_speakers) == 2 and 1 <= self.babble_speakers[0] <= self.babble_speakers[1],
                 "babble_speakers must be [low, high] with low >= 1")
        _require(all(0.5 <= s <= 2.0 and s != 1.0 for s in self.speeds), "speeds must be in [0.5, 2], not 1.0")
        _require(min(self.generated_noises, self.generated_music, self.generated_rirs) >= 1,
                 "generated_* counts must be >= 1")
        _require(self.generated_seconds >= 1.0, "generated_seconds must be >= 1")


# --------------------------------------------------------------------------------- training


@dataclass
class LoaderConfig:
    """How training batches are drawn (see data/sampler.py and data/dataset.py)."""

    crop_seconds: float = 3.0  # random crops; shorter utterances are repeated to this length
    batch_size: int = 64  # global batch: divided over torchrun processes
    sampler: Literal["utterance", "distinct_speakers"] = "utterance"
    num_workers: int = 2
    batches_per_epoch: int = 0  # 0: one pass over the training examples

    def __post_init__(self) -> None:
        _require(self.crop_seconds > 0.1, "crop_seconds must be > 0.1")
        _require(self.batch_size >= 1 and self.num_workers >= 0 and self.batches_per_epoch >= 0,
                 "batch_size must be >= 1, num_workers and batches_per_epoch >= 0")


# ------------------------------------------------------------------------------------ model


@dataclass
class BackboneConfig:
    type: Literal["wavlm", "hubert", "wav2vec2", "data2vec-audio"] = "wavlm"
    path: str = ""  # a local save_pretrained directory (pre-trained weights); empty: random init from arch
    arch: dict[str, Any] = field(default_factory=dict)  # transformers config keys for a config-only model
    random_init: bool = False  # with path: the same architecture, random weights (a control)
    normalize_waveform: bool | None = None  # None: as the model's preprocessor_config.json says (else off)

    def __post_init__(self) -> None:
        _require(not (self.random_init and not self.path), "random_init needs path (the architecture to copy)")
        _require(not (self.path and self.arch), "give either path (a saved model) or arch (a config-only model)")


@dataclass
class BackendConfig:
    type: Literal["mhfa", "wsasp", "clstoken"] = "mhfa"
    heads: int = 64  # MHFA
    compression_dim: int = 128  # MHFA
    attention_dim: int = 128  # weighted-sum + attentive statistics pooling
    embed_dim: int = 256
    token_dim: int = 128  # class-token transformer
    token_layers: int = 2
    token_heads: int = 4
    token_ffn: int = 256
    class_token: Literal["learned", "sampled"] = "learned"
    token_bank: int = 8  # sampled: trainable (mean, log-variance) tokens drawn from in training
    distill_token: bool = False

    def __post_init__(self) -> None:
        _require(min(self.heads, self.compression_dim, self.attention_dim, self.embed_dim, self.token_dim,
                     self.token_layers, self.token_heads, self.token_ffn, self.token_bank) >= 1,
                 "back-end sizes must be >= 1")
        _require(self.token_dim % self.token_heads == 0, "token_dim must be divisible by token_heads")


@dataclass
class DistillConfig:
    """Knowledge distillation into the class-token back-end's distillation token."""

    teacher: str = ""  # a trained voxadapt model dir (e.g. exp/mhfa_tiny/model); empty: no distillation
    weight: float = 1.0  # loss = CE(class token) + weight * KD(distillation token)
    temperature: float = 2.0

    def __post_init__(self) -> None:
        _require(self.weight >= 0 and self.temperature > 0, "distill.weight >= 0 and temperature > 0")


@dataclass
class AdapterConfig:
    """Parameter-efficient adaptation; see models/adapters.py."""

    inner: bool = False  # parallel bottlenecks at self-attention and feed-forward of each layer
    inter: bool = False  # a bottleneck on each layer's output before the back-end
    bottleneck: int = 64
    scale: float = 1.0
    activation: Literal["relu", "gelu"] = "relu"
    layers: list[int] = field(default_factory=list)  # transformer layers to adapt; empty: all
    lora: bool = False  # LoRA on attention q/v (the comparison variant)
    lora_rank: int = 8
    lora_alpha: float = 16.0
    train_layer_norms: bool = True  # with adapters, the backbone's LayerNorms train too

    def __post_init__(self) -> None:
        _require(self.bottleneck >= 1 and self.lora_rank >= 1, "bottleneck and lora_rank must be >= 1")

    @property
    def enabled(self) -> bool:
        return self.inner or self.inter or self.lora


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    adapters: AdapterConfig = field(default_factory=AdapterConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        _require(not self.distill.teacher or (self.backend.type == "clstoken" and self.backend.distill_token),
                 "distill.teacher needs backend.type clstoken with distill_token: true")


@dataclass
class DropClassConfig:
    """DropClass (Luu, Bell, Renals, Odyssey 2020): every N steps a fresh random set of K classes
    leaves the data and the head."""

    every_steps: int = 0  # N; 0: off
    drop: int = 0  # K
    reinit_head: bool = False  # re-initialise the classification layer at each draw
    batch_classes_only: bool = False  # softmax only over the kept classes present in the batch

    def __post_init__(self) -> None:
        _require(self.every_steps >= 0 and self.drop >= 0, "dropclass every_steps and drop must be >= 0")
        _require(not self.drop or self.every_steps >= 1, "dropclass.every_steps must be >= 1 when drop > 0")


@dataclass
class DropAdaptConfig:
    """DropAdapt (Luu, Bell, Renals, Odyssey 2020): every N steps, permanently drop the K classes least probable on the
    (unlabelled) adaptation data, from the head and the data."""

    every_steps: int = 0  # N; 0: off
    drop: int = 0  # K
    variant: Literal["standard", "data_only", "random"] = "standard"  # data_only: head keeps all rows
    adaptation_dir: str = ""  # a data dir; empty: the enrolment side of the test sets' trial lists
    crop_seconds: float = 3.0

    def __post_init__(self) -> None:
        _require(self.every_steps >= 0 and self.drop >= 0, "dropadapt every_steps and drop must be >= 0")
        _require(not self.drop or self.every_steps >= 1, "dropadapt.every_steps must be >= 1 when drop > 0")
        _require(self.crop_seconds > 0.1, "dropadapt.crop_seconds must be > 0.1")


@dataclass
class PhaseConfig:
    """One training run over the data (stage 3 runs train.phases, stage 4 adapt.phases, in order)."""

    name: str = "main"
    epochs: int = 10
    trainable_layers: int = -1  # -1: every transformer layer (+ its input embedding); 0: frozen; k: top k
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 5e-3  # back-end and AAM head
    backbone_lr: float = 2e-5  # the top transformer layer
    adapter_lr: float = 1e-3  # adapters, LoRA factors (and LayerNorms trained with them)
    layer_decay: float = 1.0  # transformer layer i gets backbone_lr * layer_decay^(L-1-i)
    weight_decay: float = 1e-4
    momentum: float = 0.9  # SGD
    warmup_epochs: float = 0.0
    schedule: Literal["constant", "exponential", "step", "cosine"] = "step"
    final_lr_ratio: float = 0.01  # exponential / cosine: last lr relative to the peak
    step_gamma: float = 0.95  # step: multiply by this every epoch
    margin: float = 0.2
    margin_ramp: list[float] = field(default_factory=lambda: [0.0, 0.0])  # [start, end] epochs of the 0 -> margin ramp
    scale: float = 30.0
    crop_seconds: float = 0.0  # 0: loader.crop_seconds
    batch_size: int = 0  # 0: loader.batch_size
    l2sp: Literal["none", "normalized", "plain"] = "none"
    l2sp_weight: float = 0.01
    grad_clip: float = 0.0  # max gradient norm; 0: off
    accum_steps: int = 1
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    checkpoint_every_steps: int = 0  # 0: at the end of each epoch only
    average_last: int = 1  # the phase's model = average of its last K epoch checkpoints
    dropclass: DropClassConfig = field(default_factory=DropClassConfig)
    dropadapt: DropAdaptConfig = field(default_factory=DropAdaptConfig)

    def __post_init__(self) -> None:
        _require(not (self.dropclass.drop and self.dropadapt.drop), "use dropclass or dropadapt in a phase, not both")
        _require(bool(self.name) and self.name.replace("_", "").replace("-", "").isalnum(),
                 "name must be a word (it names exp/<name>/<phase>/)")
        _require(self.epochs >= 1, "epochs must be >= 1")
        _require(self.trainable_layers >= -1, "trainable_layers must be -1 (all), 0 (frozen) or k > 0")
        _require(self.lr > 0 and self.backbone_lr >= 0 and 0 < self.layer_decay <= 1, "need lr > 0, backbone_lr >= 0, "
                 "0 < layer_decay <= 1")
        _require(0 <= self.margin < 1.5 and self.scale > 0, "need 0 <= margin < 1.5 and scale > 0")
        _require(len(self.margin_ramp) == 2 and 0 <= self.margin_ramp[0] <= self.margin_ramp[1],
                 "margin_ramp must be [start_epoch, end_epoch]")
        _require(0 < self.final_lr_ratio <= 1 and 0 < self.step_gamma <= 1, "final_lr_ratio and step_gamma in (0, 1]")
        _require(self.accum_steps >= 1 and self.average_last >= 1 and self.grad_clip >= 0,
                 "accum_steps and average_last must be >= 1, grad_clip >= 0")
        _require(self.average_last <= self.epochs, "average_last cannot exceed epochs")
        _require(self.crop_seconds >= 0 and self.batch_size >= 0 and self.checkpoint_every_steps >= 0,
                 "crop_seconds, batch_size and checkpoint_every_steps must be >= 0")


@dataclass
class TrainConfig:
    phases: list[PhaseConfig] = field(default_factory=lambda: [PhaseConfig()])
    device: str = "auto"  # auto: cuda when available, else cpu
    deterministic: bool = False  # bit-exact CPU runs (kill/resume tests); slower
    num_threads: int = 0  # torch threads per process; 0: torch's default

    def __post_init__(self) -> None:
        names = [p.name for p in self.phases]
        _require(len(set(names)) == len(names), "phase names must be unique")


@dataclass
class AdaptConfig:
    """Stage 4: more phases from the stage-3 model (e.g. large-margin fine-tuning)."""

    phases: list[PhaseConfig] = field(default_factory=list)


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
    num_threads: int = 0  # torch threads per extraction job; 0: torch's default
    # Every input is scaled to this RMS level (dB re full scale) so embeddings do not depend on
    # recording level; the embedded corpus's median is -25 dBFS. null: embed as recorded.
    level_dbfs: float | None = -26.0
    vad: bool = False  # energy VAD first (data/conditioning.py): silence and pauses do not move the embedding

    def __post_init__(self) -> None:
        _require(self.max_chunk_seconds >= 1.0, "max_chunk_seconds must be >= 1")
        _require(0 <= self.chunk_overlap_seconds < self.max_chunk_seconds, "need 0 <= chunk_overlap < max_chunk")
        _require(self.batch_seconds == 0 or self.batch_seconds >= self.max_chunk_seconds,
                 "batch_seconds must be 0 (auto) or >= max_chunk_seconds")
        _require(self.max_padding >= 0, "max_padding must be >= 0")
        _require(self.level_dbfs is None or -60 <= self.level_dbfs <= -3, "level_dbfs must be null or in [-60, -3]")


# ---------------------------------------------------------------------------------- scoring


@dataclass
class ScoringConfig:
    """Stages 6-7: back-ends, calibration and metrics."""

    methods: list[Literal["cosine", "asnorm", "plda"]] = field(default_factory=lambda: ["cosine", "asnorm", "plda"])
    lda_dim: int = 200  # capped at the embedding dim and speakers - 1
    plda_iters: int = 10
    asnorm_top_n: int = 300
    # Calibration trials: a set with held-out speakers and a trial list (e.g. dev); empty: trials
    # of training speakers held out of the back-end (calibration_fraction of them).
    calibration_set: str = ""
    calibration_fraction: float = 0.1
    calibration_trials: int = 20000
    calibration_quality: bool = True  # log durations of both sides as quality measures
    asnorm_cohort: str = ""  # x-vector .scp of the AS-norm cohort; empty: stage 6's training-speaker means
    p_targets: list[float] = field(default_factory=lambda: [0.01, 0.05])
    seed: int = 0

    def __post_init__(self) -> None:
        _require(len(self.methods) >= 1 and len(set(self.methods)) == len(self.methods), "methods: one or more, no repeats")
        _require(self.lda_dim >= 1 and self.plda_iters >= 1 and self.asnorm_top_n >= 1, "lda_dim, plda_iters, "
                 "asnorm_top_n must be >= 1")
        _require(0 < self.calibration_fraction < 0.5, "calibration_fraction must be in (0, 0.5)")
        _require(self.calibration_trials >= 100, "calibration_trials must be >= 100")
        _require(len(self.p_targets) >= 1 and all(0 < p < 1 for p in self.p_targets), "p_targets must be in (0, 1)")


# ------------------------------------------------------------------------------ pre-training


@dataclass
class PretrainConfig:
    """Self-supervised pre-training of model.backbone.arch (local/pretrain_ssl.sh; not a run.sh stage).

    HuBERT-style masked prediction of k-means units of MFCCs, with WavLM-style denoising (some
    inputs get noise or an overlapping second utterance; the targets stay those of the clean one).
    """

    data_dir: str = ""  # any Kaldi data dir (labels unused); empty: render unlabeled synthetic speakers
    speakers: int = 200  # synthetic: speakers disjoint from the embedded corpus (own seed and ids)
    utts_per_speaker: int = 12
    corpus_seed: int = 7
    clusters: int = 100
    kmeans_frames: int = 200_000
    crop_seconds: float = 2.0
    batch_size: int = 32
    steps: int = 3000
    lr: float = 5.0e-4
    warmup_steps: int = 300
    weight_decay: float = 0.01
    mask_prob: float = 0.08  # span starts per frame
    mask_length: int = 10
    noise_prob: float = 0.3  # inputs corrupted for denoising
    checkpoint_every_steps: int = 200
    num_workers: int = 1
    out_dir: str = "models/tiny_wavlm"

    def __post_init__(self) -> None:
        _require(self.speakers >= 1 and self.utts_per_speaker >= 1, "speakers and utts_per_speaker must be >= 1")
        _require(self.clusters >= 2 and self.kmeans_frames >= self.clusters, "need clusters >= 2, kmeans_frames >= clusters")
        _require(self.crop_seconds >= 0.5 and self.batch_size >= 1 and self.steps >= 1, "crop_seconds >= 0.5, "
                 "batch_size and steps >= 1")
        _require(0 < self.mask_prob < 1 and self.mask_length >= 1 and 0 <= self.noise_prob <= 1,
                 "mask_prob in (0, 1), mask_length >= 1, noise_prob in [0, 1]")


# ----------------------------------------------------------------------------------------- top


@dataclass
class Config:
    name: str = "mhfa_tiny"
    seed: int = 1
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    def __post_init__(self) -> None:
        _require(bool(self.name) and "/" not in self.name and " " not in self.name,
                 "name must be a non-empty word (it names exp/<name>)")
        names = [p.name for p in self.train.phases + self.adapt.phases]
        _require(len(set(names)) == len(names), "phase names must be unique across train and adapt")
        cal, sets = self.scoring.calibration_set, self.data.all_sets
        _require(not cal or cal in sets, f"scoring.calibration_set '{cal}' is not a data set of corpus "
                 f"'{self.data.corpus}' ({', '.join(sets)}); set it to '' to calibrate on held-out training "
                 "speakers (conf/mhfa_kaldi.yaml does)")


# ------------------------------------------------------------------------------------ loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(tp: Any, value: Any, key: str, source: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    bad = ConfigError(f"{source}: {key}: expected {_type_name(tp)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key, source)
            except ConfigError:
                continue
        raise bad
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{source}: {key}: must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (list, Sequence, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad
        inner = args[0] if args else Any
        return [_coerce(inner, v, f"{key}.{i}", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return {str(k): _coerce(args[1], v, f"{key}.{k}", source) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source, prefix=f"{key}.")
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads '2e-5' (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise ConfigError(f"{source}: {key}: unsupported type {_type_name(tp)}")


def from_dict(cls: type[T], data: Any, source: str, prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping, with errors naming `source` and the dotted key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'top level'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            raise ConfigError(
                f"{source}: unknown key '{prefix}{key}' (keys allowed here: {', '.join(names)})"
            )
    kwargs = {k: _coerce(hints[k], v, f"{prefix}{k}", source) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'}: {err}") from None


def _set_dotted(tree: dict, dotted: str, value: Any, source: str, defaults: Any = None) -> None:
    """Set a.b.c (list items by number: train.phases.0.epochs) in a raw config tree.

    A section the tree lacks is first copied from `defaults`, so '--set train.phases.0.lr=1'
    edits the default phase list and '--set augment.weights.music=0' keeps the other weights.
    """
    keys = dotted.split(".")
    node: Any = tree
    for i, k in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not k.isdigit() or int(k) >= len(node):
                raise ConfigError(f"{source}: cannot set '{dotted}': '{k}' is not an item of a {len(node)}-item list")
            k = int(k)
        elif not isinstance(node, dict):
            raise ConfigError(f"{source}: cannot set '{dotted}': '{keys[i - 1]}' is not a section")
        if last:
            node[k] = value
            return
        if isinstance(node, dict) and k not in node:
            fallback = defaults.get(k) if isinstance(defaults, dict) else None
            node[k] = copy.deepcopy(fallback) if fallback is not None else ([] if keys[i + 1].isdigit() else {})
        defaults = (defaults[k] if isinstance(defaults, list) and isinstance(k, int) and k < len(defaults)
                    else defaults.get(k) if isinstance(defaults, dict) else None)
        node = node[k]


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text}: write overrides as key.path=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _deep_merge(base: dict, over: dict) -> dict:
    """Mappings merge key by key; anything else (lists included) in `over` replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    keeps the last silently, so a config edited by appending would hide the first setting)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key '{key}' given twice (first on line {seen[key] + 1})", key_node.start_mark)
        if isinstance(key, (str, int, float, bool)):
            seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A config file with its 'base:' chain resolved (paths relative to the including file)."""
    if not path.is_file():
        where = f" (base of {seen[-1]})" if seen else ""
        raise ConfigError(f"{path}: config file not found{where}; pass an existing file with --config (see conf/)")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base:' includes itself in a loop")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the config as UTF-8") from None
    try:
        loaded = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        if isinstance(err, yaml.constructor.ConstructorError) and "given twice" in problem:
            raise ConfigError(f"{path}{line}: {problem}; keep one of them") from None
        raise ConfigError(f"{path}{line}: not valid YAML ({problem}); fix the syntax") from None
    if loaded is None:
        raise ConfigError(f"{path}: empty config; give at least 'name:' and the sections you change, "
                          "or start it with 'base: mhfa_tiny.yaml' (see conf/)")
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    raw = loaded
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must be a path to another config")
    return _deep_merge(_read_yaml(path.parent / base, (*seen, path.resolve())), raw)


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (None: all defaults) and apply `key.path=value` overrides.

    A config may start with 'base: other.yaml': the other file is read first and this one's
    mappings merge into it (lists and values replace)."""
    source = str(path) if path else "<defaults>"
    raw: dict = _read_yaml(Path(path)) if path else {}
    defaults = to_dict(Config()) if overrides else None
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(raw, key, value, f"{source} (--set {text})", defaults)
    return from_dict(Config, raw, source)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def get_dotted(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        if not hasattr(node, part):
            raise ConfigError(f"no config key '{dotted}'")
        node = getattr(node, part)
    return node
