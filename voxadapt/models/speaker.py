"""The speaker model (SSL backbone + pooling head), its AAM head, and the trained-model directory.

A trained-model directory (exp/<name>/model/, or any phase's output) holds:
  config.yaml         the experiment config that made it
  backbone.json       the transformers config of the backbone (rebuilt without downloading)
  model.safetensors   weights of backbone, pooling and head ('head.' prefix)
  classes.txt         the training classes, one per line, in head-row order
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from voxadapt.compat import upgrade_state_dict
from voxadapt.config import Config, ModelConfig, dump_yaml
from voxadapt.errors import VoxadaptError, located
from voxadapt.fileio import atomic_dir, read_json, read_safetensors
from voxadapt.layout import ModelDirLayout
from voxadapt.models.aam import AAMSoftmax
from voxadapt.models.backbone import (
    MODEL_TYPES,
    SSLBackbone,
    backbone_digest,
    backbone_from_config,
    backbone_type,
    random_hf_model,
    waveform_normalisation,
)
from voxadapt.models.clstoken import ClassTokenPooling
from voxadapt.models.mhfa import MHFA, WeightedSumASP

log = logging.getLogger(__name__)


class SpeakerModel(nn.Module):
    """Waveforms (B, S) -> speaker embeddings (B, E)."""

    def __init__(self, backbone: SSLBackbone, pooling: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling

    @property
    def backbone_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.backbone.parameters())

    def features(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        if self.backbone_frozen:
            with torch.no_grad():  # a frozen backbone is a feature extractor: keep no graph
                return self.backbone(wav, lengths)
        return self.backbone(wav, lengths)

    def forward(self, wav: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.pooling(*self.features(wav, lengths))


def make_pooling(cfg: ModelConfig, num_states: int, hidden: int) -> nn.Module:
    b = cfg.pooling
    if b.type == "mhfa":
        return MHFA(num_states, hidden, b.heads, b.compression_dim, b.embed_dim)
    if b.type == "clstoken":
        return ClassTokenPooling(num_states, hidden, b)
    return WeightedSumASP(num_states, hidden, b.attention_dim, b.embed_dim)


def normalize_waveform(cfg: ModelConfig) -> bool:
    """Whether the backbone expects zero-mean unit-variance input, logged with where that was decided."""
    on, source = waveform_normalisation(cfg.backbone)
    log.info("waveform normalisation: %s (from %s)", "on" if on else "off", source)
    return on


def model_fingerprint(cfg: ModelConfig) -> dict:
    """The model section as training reads it: the backbone by its content digest and the waveform
    normalisation as decided, not by path strings (a moved or re-linked model is the same); the
    teacher is fingerprinted by its weights beside this."""
    out = dataclasses.asdict(cfg)
    out["backbone"].update(path=backbone_digest(cfg.backbone), normalize_waveform=waveform_normalisation(cfg.backbone)[0])
    out["distill"]["teacher"] = bool(cfg.distill.teacher)
    for key in ("token_eval", "token_eval_entry"):  # the class token's test-time rule: training never reads it
        del out["pooling"][key]
    return out


def build_model(cfg: Config, num_classes: int) -> tuple[SpeakerModel, AAMSoftmax]:
    """A fresh model: pre-trained (or seeded random) backbone, seeded random pooling and head."""
    hf = backbone_from_config(cfg.model.backbone, cfg.seed)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        backbone = SSLBackbone(hf, normalize_waveform(cfg.model), cfg.model.adapters)
        pooling = make_pooling(cfg.model, backbone.num_layers + 1, backbone.hidden_size)
        head = AAMSoftmax(pooling.embed_dim, num_classes, subcenters=cfg.model.subcenters)
    return SpeakerModel(backbone, pooling), head


def state_for_saving(model: SpeakerModel, head: AAMSoftmax) -> dict[str, torch.Tensor]:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    state.update({f"head.{k}": v.detach().cpu().contiguous() for k, v in head.state_dict().items()})
    return state


def save_model_dir(path: Path, cfg: Config, model: SpeakerModel, head: AAMSoftmax, classes: list[str],
                   state: dict[str, torch.Tensor] | None = None) -> None:
    """Write a trained-model directory atomically (`state` overrides the weights, e.g. an average)."""
    if cfg.model.backbone.path:  # the normalisation read from its directory, for where that directory is absent
        backbone = dataclasses.replace(cfg.model.backbone, normalize_waveform=model.backbone.normalize_waveform)
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone=backbone))
    with atomic_dir(path) as tmp_dir:
        tmp = ModelDirLayout(tmp_dir)
        tmp.config.write_text(dump_yaml(cfg))
        tmp.backbone.write_text(model.backbone.model.config.to_json_string())
        tmp.classes.write_text("".join(f"{c}\n" for c in classes))
        # The head's scale is no weight: saved beside them, so a teacher's logits are the ones it was trained on.
        save_file(state if state is not None else state_for_saving(model, head), str(tmp.weights),
                  metadata={"format": "voxadapt", "head_scale": repr(float(head.scale))})


def hf_model_from_json(file: Path, fix: str) -> nn.Module:
    """An untrained transformers model of the architecture saved in `file` (weights come later)."""
    hf_json = read_json(file, fix)
    model_type = backbone_type(hf_json.get("model_type", "")) if isinstance(hf_json, dict) else ""
    if model_type not in MODEL_TYPES:
        raise VoxadaptError(located(file, None, f"not an SSL model config (model_type {model_type!r})", fix))
    arch = {k: v for k, v in hf_json.items() if k not in ("model_type", "architectures", "transformers_version")}
    return random_hf_model(model_type, arch, 0, f"{file} ({fix})")


def speaker_model_around(hf: nn.Module, cfg: Config) -> SpeakerModel:
    """The speaker model of `cfg` (wrapper, adapters, pooling) around a transformers model."""
    backbone = SSLBackbone(hf, normalize_waveform(cfg.model), cfg.model.adapters)
    return SpeakerModel(backbone, make_pooling(cfg.model, backbone.num_layers + 1, backbone.hidden_size))


def load_weights(file: Path, model: SpeakerModel, head: AAMSoftmax) -> None:
    state = upgrade_state_dict(read_safetensors(file, "re-run the stage that wrote it"))
    head_state = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
    body = {k: v for k, v in state.items() if not k.startswith("head.")}
    for module, part in ((model, body), (head, head_state)):
        own = module.state_dict()
        wrong = sorted(set(own) ^ set(part)) or [k for k in own if own[k].shape != part[k].shape]
        if wrong:
            raise VoxadaptError(located(file, None, f"weights do not fit this model (first mismatch: {wrong[0]})",
                                        "the file was made with another model config"))
        module.load_state_dict(part)
