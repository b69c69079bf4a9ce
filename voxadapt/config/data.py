"""Config sections of the data: corpus, augmentation, training loader."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from voxadapt.config.checks import require
from voxadapt.layout import AUGMENT_WEIGHTS, DEGRADE_CONDITIONS, CorpusSets, corpus_sets

# ----------------------------------------------------------------------------------------- data


@dataclass
class SyntheticConfig:
    """The embedded corpus: pseudo-speakers synthesised with espeak-ng (see corpus/synthetic.py)."""

    num_train_speakers: int = 100
    num_dev_speakers: int = 10
    num_test_speakers: int = 20
    utts_per_speaker: int = 12
    test_utts_per_speaker: int = 0  # utterances of each test speaker; 0: utts_per_speaker
    min_duration: float = 2.0
    max_duration: float = 8.0
    num_trials: int = 6000
    target_fraction: float = 0.2
    dev_trials: int = 2000
    seed: int = 0  # the corpus has its own seed: training seeds vary over one fixed corpus

    def __post_init__(self) -> None:
        require(self.num_train_speakers >= 2, "num_train_speakers must be >= 2")
        require(self.num_test_speakers >= 2, "num_test_speakers must be >= 2")
        require(self.num_dev_speakers == 0 or self.num_dev_speakers >= 2, "num_dev_speakers must be 0 or >= 2")
        require(self.utts_per_speaker >= 2, "utts_per_speaker must be >= 2 (trials need target pairs)")
        require(self.test_utts_per_speaker == 0 or self.test_utts_per_speaker >= 2,
                 "test_utts_per_speaker must be 0 (as utts_per_speaker) or >= 2")
        require(0.5 <= self.min_duration <= self.max_duration, "need 0.5 <= min_duration <= max_duration")
        require(0.0 < self.target_fraction < 1.0, "target_fraction must be in (0, 1)")
        require(self.num_trials >= 10 and self.dev_trials >= 10, "num_trials and dev_trials must be >= 10")


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
class DegradedConfig:
    """A degraded copy of the first test set, '<test>_degraded': the same utterance ids, speakers,
    trial lists and enroll.map, the audio through conditions augmentation never uses (one per
    utterance, drawn evenly): rooms longer than the generated training rooms, noise kinds kept out of
    augmentation, a telephone line, a lossy codec (corpus/degrade.py)."""

    enabled: bool = False
    conditions: list[str] = field(default_factory=lambda: list(DEGRADE_CONDITIONS))
    rt60: list[float] = field(default_factory=lambda: [0.9, 1.6])  # s; generated training rooms: 0.2-0.9
    noise_snr: list[float] = field(default_factory=lambda: [0.0, 10.0])  # dB
    codec_compression: list[float] = field(default_factory=lambda: [0.6, 1.0])  # 1: lowest bit rate
    seed: int = 0

    def __post_init__(self) -> None:
        require(bool(self.conditions) and set(self.conditions) <= set(DEGRADE_CONDITIONS),
                 f"degraded.conditions must be among {', '.join(DEGRADE_CONDITIONS)}")
        for name in ("rt60", "noise_snr", "codec_compression"):
            lo_hi = getattr(self, name)
            require(len(lo_hi) == 2 and lo_hi[0] <= lo_hi[1], f"degraded.{name} must be [low, high]")
        require(self.rt60[0] > 0, "degraded.rt60 must be > 0")
        require(0 <= self.codec_compression[0] and self.codec_compression[1] <= 1,
                 "degraded.codec_compression must be within [0, 1]")


@dataclass
class DataConfig:
    corpus: Literal["synthetic", "voxceleb", "kaldi"] = "synthetic"
    sample_rate: int = 16000
    min_duration: float = 0.2  # shorter recordings are rejected by validation
    # How stage 0 checks the audio (data/validate.py): decode every recording, or read headers and
    # decode a sample; 'auto' decodes dirs up to 20,000 recordings, of them up to 2,000 pipes.
    validation: Literal["auto", "decode", "header"] = "auto"
    validation_sample: int = 1000  # recordings decoded in full by the header check
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    voxceleb: VoxCelebConfig = field(default_factory=VoxCelebConfig)
    kaldi: KaldiImportConfig = field(default_factory=KaldiImportConfig)
    degraded: DegradedConfig = field(default_factory=DegradedConfig)

    def __post_init__(self) -> None:
        require(self.sample_rate in (8000, 16000, 22050, 24000, 44100, 48000), "sample_rate is not a usual rate")
        require(self.min_duration > 0, "min_duration must be > 0")
        require(self.validation_sample >= 0, "validation_sample must be >= 0")

    @property
    def sets(self) -> CorpusSets:
        return corpus_sets(self.corpus, with_dev=self.synthetic.num_dev_speakers > 0, degraded=self.degraded.enabled)


# ------------------------------------------------------------------------------ augmentation


@dataclass
class AugmentConfig:
    """Stage 2 resources and the online augmentation (augment/online.py)."""

    musan_root: str = ""  # MUSAN (noise/, music/, speech/); empty: generated stand-ins
    rirs_root: str = ""  # RIRS_NOISES (simulated_rirs/, real_rirs_isotropic_noises/); empty: generated
    probability: float = 0.6  # per example: augment with one of the kinds below, else leave clean
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
        require(0.0 <= self.probability <= 1.0, "probability must be in [0, 1]")
        require(set(self.weights) <= set(AUGMENT_WEIGHTS),
                 f"weights keys must be among {', '.join(AUGMENT_WEIGHTS)}")
        require(all(w >= 0 for w in self.weights.values()) and sum(self.weights.values()) > 0,
                 "weights must be >= 0 and not all zero")
        for name in ("noise_snr", "music_snr", "babble_snr"):
            lo_hi = getattr(self, name)
            require(len(lo_hi) == 2 and lo_hi[0] <= lo_hi[1], f"{name} must be [low, high]")
        require(len(self.babble_speakers) == 2 and 1 <= self.babble_speakers[0] <= self.babble_speakers[1],
                 "babble_speakers must be [low, high] with low >= 1")
        require(all(0.5 <= s <= 2.0 and s != 1.0 for s in self.speeds), "speeds must be in [0.5, 2], not 1.0")
        require(min(self.generated_noises, self.generated_music, self.generated_rirs) >= 1,
                 "generated_* counts must be >= 1")
        require(self.generated_seconds >= 1.0, "generated_seconds must be >= 1")


# --------------------------------------------------------------------------------- training


@dataclass
class LoaderConfig:
    """How training batches are drawn (see data/sampler.py and data/dataset.py)."""

    crop_seconds: float = 3.0  # random crops; shorter utterances are repeated to this length
    batch_size: int = 64  # global batch: divided over torchrun processes
    sampler: Literal["utterance", "distinct_speakers"] = "utterance"
    num_workers: int = 2  # -1: the cores each training process may use, less one, at most 8
    batches_per_epoch: int = 0  # 0: one pass over the training examples
    # Read training audio from lhotse Shar shards written by stage 2 (data/shards.py) instead of
    # one file per utterance: FLAC decoded once, read a few shards at a time.
    shards: bool = False
    shard_size: int = 1000  # utterances per shard
    shard_window: int = 4  # shards shuffled together

    def fingerprint(self) -> dict:
        """What training results depend on: shard_size and shard_window only with shards (nothing
        reads them otherwise); `shards` itself as voxadapt/compat.py's ADDED says."""
        d = asdict(self)
        if not self.shards:
            for key in ("shard_size", "shard_window"):
                del d[key]
        return d

    def __post_init__(self) -> None:
        require(self.crop_seconds > 0.1, "crop_seconds must be > 0.1")
        require(self.shard_size >= 1 and self.shard_window >= 1, "shard_size and shard_window must be >= 1")
        require(not self.shards or self.sampler == "utterance",
                "loader.shards needs sampler: utterance (distinct_speakers reads every shard at random)")
        require(self.batch_size >= 1 and self.num_workers >= -1 and self.batches_per_epoch >= 0,
                 "batch_size must be >= 1, num_workers >= -1 (auto) and batches_per_epoch >= 0")
