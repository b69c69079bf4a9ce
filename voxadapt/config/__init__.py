"""Experiment configs: the schema (`schema` and its sections `data`, `model`, `training`, `scoring`)
and reading, overriding and saving configs (`loader`)."""

from voxadapt.compat import SCHEMA_VERSION
from voxadapt.config.data import AugmentConfig, DataConfig, KaldiImportConfig, LoaderConfig, SyntheticConfig, VoxCelebConfig
from voxadapt.config.loader import dump_yaml, get_dotted, load_config, to_dict
from voxadapt.config.model import AdapterConfig, BackboneConfig, DistillConfig, ModelConfig, PoolingConfig
from voxadapt.config.schema import Config
from voxadapt.config.scoring import ExtractConfig, ScoringConfig
from voxadapt.config.training import AdaptConfig, DropAdaptConfig, DropClassConfig, PhaseConfig, PretrainConfig, TrainConfig

__all__ = [
    "dump_yaml",
    "get_dotted",
    "load_config",
    "to_dict",
    "SCHEMA_VERSION",
    "Config",
    "SyntheticConfig",
    "VoxCelebConfig",
    "KaldiImportConfig",
    "DataConfig",
    "AugmentConfig",
    "LoaderConfig",
    "BackboneConfig",
    "PoolingConfig",
    "DistillConfig",
    "AdapterConfig",
    "ModelConfig",
    "DropClassConfig",
    "DropAdaptConfig",
    "PhaseConfig",
    "TrainConfig",
    "AdaptConfig",
    "PretrainConfig",
    "ExtractConfig",
    "ScoringConfig",
]
