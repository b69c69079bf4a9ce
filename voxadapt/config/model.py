"""Config sections of the model: backbone, pooling head, adapters, distillation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from voxadapt.config.checks import require

# ------------------------------------------------------------------------------------ model


@dataclass
class BackboneConfig:
    type: Literal["wavlm", "hubert", "wav2vec2", "data2vec-audio", "w2v-bert"] = "wavlm"
    path: str = ""  # a local save_pretrained directory (pre-trained weights; run.sh --ssl_model)
    arch: dict[str, Any] = field(default_factory=dict)  # transformers config keys for a config-only model (random init)
    random_init: bool = False  # with path: the same architecture, random weights (a control)
    # Zero-mean unit-variance waveforms, as the model was pre-trained (WavLM Large: true, Base+: false).
    # None: the path's preprocessor_config.json do_normalize (an error without one); a config-only model: off.
    normalize_waveform: bool | None = None

    def __post_init__(self) -> None:
        require(not (self.random_init and not self.path), "random_init needs path (the architecture to copy)")
        require(not (self.path and self.arch), "give either path (a saved model) or arch (a config-only model)")

    @property
    def source(self) -> str:
        """Where the weights come from: 'pretrained' (path), 'random' (arch, or path with random_init),
        or '' when the config names neither (stages 3-4 then refuse to start; run.sh asks for --ssl_model)."""
        if self.path:
            return "random" if self.random_init else "pretrained"
        return "random" if self.arch else ""


@dataclass
class PoolingConfig:
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
    # sampled, at test time: the mean of the bank's means (a token never seen in training) or one
    # entry's mean (token_eval_entry); measured equal (docs/methods.md)
    token_eval: Literal["bank_mean", "entry"] = "bank_mean"
    token_eval_entry: int = 0
    token_positions: Literal["none", "sinusoidal"] = "none"  # a position code added to the frames
    distill_token: bool = False

    def __post_init__(self) -> None:
        require(min(self.heads, self.compression_dim, self.attention_dim, self.embed_dim, self.token_dim,
                     self.token_layers, self.token_heads, self.token_ffn, self.token_bank) >= 1,
                 "pooling sizes must be >= 1")
        require(self.token_dim % self.token_heads == 0, "token_dim must be divisible by token_heads")
        require(0 <= self.token_eval_entry < self.token_bank,
                f"token_eval_entry must be a bank entry, 0 to token_bank - 1 ({self.token_bank - 1})")


@dataclass
class DistillConfig:
    """Knowledge distillation into the class-token pooling's distillation token."""

    teacher: str = ""  # a trained voxadapt model dir (e.g. exp/mhfa_tiny/model); empty: no distillation
    weight: float = 1.0  # loss = CE(class token) + weight * KD(distillation token)
    temperature: float = 2.0

    def __post_init__(self) -> None:
        require(self.weight >= 0 and self.temperature > 0, "distill.weight >= 0 and temperature > 0")


@dataclass
class AdapterConfig:
    """Parameter-efficient adaptation; see models/adapters.py."""

    inner: bool = False  # parallel bottlenecks at self-attention and feed-forward of each layer
    inter: bool = False  # a bottleneck on each layer's output before the pooling
    bottleneck: int = 64
    scale: float = 1.0
    activation: Literal["relu", "gelu"] = "relu"
    layers: list[int] = field(default_factory=list)  # transformer layers to adapt; empty: all
    lora: bool = False  # LoRA on attention q/v (the comparison variant)
    lora_rank: int = 8
    lora_alpha: float = 16.0
    train_layer_norms: bool = True  # with adapters, the backbone's LayerNorms train too

    def __post_init__(self) -> None:
        require(self.bottleneck >= 1 and self.lora_rank >= 1, "bottleneck and lora_rank must be >= 1")

    @property
    def enabled(self) -> bool:
        return self.inner or self.inter or self.lora


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    pooling: PoolingConfig = field(default_factory=PoolingConfig)
    adapters: AdapterConfig = field(default_factory=AdapterConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    subcenters: int = 1  # AAM head: centres per speaker, the closest one scores (sub-centre AAM: 3)

    def __post_init__(self) -> None:
        require(self.subcenters >= 1, "subcenters must be >= 1")
        require(not self.distill.teacher or (self.pooling.type == "clstoken" and self.pooling.distill_token),
                 "distill.teacher needs pooling.type clstoken with distill_token: true")
        # Without a teacher the distillation token's projection never gets a gradient (and DDP stops on it).
        require(not self.pooling.distill_token or bool(self.distill.teacher),
                "pooling.distill_token needs distill.teacher (a trained model dir); or set distill_token: false")
