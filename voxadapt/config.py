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
    """Stage 2 resources and the online augmentation of SPEC.md section 6."""

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
    normalize_waveform: bool | None = None  # None: as the model's preprocessor_config.json says (else off)


@dataclass
class BackendConfig:
    type: Literal["mhfa", "wsasp"] = "mhfa"
    heads: int = 64  # MHFA
    compression_dim: int = 128  # MHFA
    attention_dim: int = 128  # weighted-sum + attentive statistics pooling
    embed_dim: int = 256

    def __post_init__(self) -> None:
        _require(min(self.heads, self.compression_dim, self.attention_dim, self.embed_dim) >= 1,
                 "heads, compression_dim, attention_dim and embed_dim must be >= 1")


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)


@dataclass
class PhaseConfig:
    """One training run over the data (stage 3 runs train.phases, stage 4 adapt.phases, in order)."""

    name: str = "main"
    epochs: int = 10
    trainable_layers: int = -1  # -1: every transformer layer (+ its input embedding); 0: frozen; k: top k
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 5e-3  # back-end and AAM head
    backbone_lr: float = 2e-5  # the top transformer layer
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

    def __post_init__(self) -> None:
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
    batch_seconds: float = 200.0  # audio per batch (utterances grouped by length)
    device: str = "auto"
    num_threads: int = 0  # torch threads per extraction job; 0: torch's default

    def __post_init__(self) -> None:
        _require(self.max_chunk_seconds >= 1.0, "max_chunk_seconds must be >= 1")
        _require(0 <= self.chunk_overlap_seconds < self.max_chunk_seconds, "need 0 <= chunk_overlap < max_chunk")
        _require(self.batch_seconds >= self.max_chunk_seconds, "batch_seconds must be >= max_chunk_seconds")


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

    def __post_init__(self) -> None:
        _require(bool(self.name) and "/" not in self.name and " " not in self.name,
                 "name must be a non-empty word (it names exp/<name>)")
        names = [p.name for p in self.train.phases + self.adapt.phases]
        _require(len(set(names)) == len(names), "phase names must be unique across train and adapt")


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


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (None: all defaults) and apply `key.path=value` overrides."""
    raw: dict = {}
    source = str(path) if path else "<defaults>"
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found; pass an existing file with --config (see conf/)")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            raise ConfigError(f"{p}{line}: not valid YAML ({getattr(err, 'problem', err)}); fix the syntax") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections")
        raw = loaded or {}
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
