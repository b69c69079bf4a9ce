"""The experiment config's schema: the top-level Config of the sections (one dataclass each, with
the checks of each value, in data, model, training and scoring).

Renaming a key, or adding one that changes what old outputs did, is recorded in voxadapt/compat.py
(RENAMED, ADDED), so configs and outputs of older versions keep reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from voxadapt.config.checks import require
from voxadapt.config.data import AugmentConfig, DataConfig, LoaderConfig
from voxadapt.config.model import ModelConfig
from voxadapt.config.scoring import ExtractConfig, ScoringConfig
from voxadapt.config.training import AdaptConfig, PretrainConfig, TrainConfig

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
        require(bool(self.name) and "/" not in self.name and " " not in self.name,
                 "name must be a non-empty word (it names exp/<name>)")
        names = [p.name for p in self.train.phases + self.adapt.phases]
        require(len(set(names)) == len(names), "phase names must be unique across train and adapt")
        cal, sets = self.scoring.calibration_set, self.data.sets.all
        require(not cal or cal in sets, f"scoring.calibration_set '{cal}' is not a data set of corpus "
                 f"'{self.data.corpus}' ({', '.join(sets)}); set it to '' to calibrate on held-out training "
                 "speakers (conf/mhfa_kaldi.yaml does)")
        w2vbert = self.model.backbone.type == "w2v-bert"
        require(not w2vbert or self.data.sample_rate == 16000,
                f"data.sample_rate {self.data.sample_rate}: a w2v-bert backbone reads 16 kHz filterbanks; "
                "resample the corpus to 16000 Hz and set data.sample_rate 16000")
        for p in self.train.phases + self.adapt.phases:  # options that depend on the model: adapters, a backbone in training mode
            require(not (p.cnn_grad_scale and w2vbert),
                    f"phase '{p.name}': cnn_grad_scale > 0 trains the CNN; a w2v-bert backbone has none (its filterbanks "
                    "have no weights): set it to 0")
            require(not (p.cnn_grad_scale and self.model.adapters.enabled),
                     f"phase '{p.name}': cnn_grad_scale > 0 fine-tunes the whole backbone; with model.adapters "
                     "(inner, inter or lora) set it to 0")
            require(not (p.layerdrop and p.trainable_layers == 0 and not self.model.adapters.enabled),
                     f"phase '{p.name}': layerdrop > 0 does nothing in a frozen phase (trainable_layers 0, no adapters): "
                     "its backbone runs in eval mode; set layerdrop 0")


