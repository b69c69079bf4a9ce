"""Class-token pooling (Mingote et al., DSP 2023).

A small transformer over the layer-weighted SSL frames; a learnable class token is prepended
and its output is the embedding (instead of average pooling). Robust variant: the token is
drawn from a bank of trainable tokens, each a learned mean and log-variance sampled with the
reparameterisation trick in training; inference uses the bank's mean or one entry's
(`token_eval`, deterministic). Optionally, a fixed sinusoidal position code on the frames. An
optional distillation token learns to match a teacher's softened predictions.

The sampling noise starts at a tenth of the means' scale and never exceeds its mean's RMS: the
pre-norm transformer reads the token through a LayerNorm, i.e. by its direction, which noise
larger than the mean would make random at every step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from voxadapt.config import PoolingConfig
from voxadapt.models.mhfa import LayerWeights

TOKEN_INIT_STD = 0.02  # the tokens' scale at initialisation (as ViT's class token)
NOISE_INIT = 0.1  # sampled tokens: the noise's std at initialisation, as a fraction of TOKEN_INIT_STD


class EncoderLayer(nn.TransformerEncoderLayer):
    """nn.TransformerEncoderLayer that the ONNX exporter can take with any number of frames: while
    exporting, its self-attention is written with reshapes that keep the time axis free (torch's
    multi-head attention fixes it to the traced length). Training and inference are torch's own."""

    def _sa_block(self, x: torch.Tensor, attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None,
                  is_causal: bool = False) -> torch.Tensor:
        if not torch.onnx.is_in_onnx_export() or attn_mask is not None or key_padding_mask is not None:
            return super()._sa_block(x, attn_mask, key_padding_mask, is_causal)
        attn = self.self_attn
        batch, _, dim = x.shape
        heads = attn.num_heads
        q, k, v = (z.reshape(batch, -1, heads, dim // heads).transpose(1, 2)
                   for z in F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, -1, dim)
        return self.dropout1(attn.out_proj(out))


class ClassTokenPooling(nn.Module):
    def __init__(self, num_states: int, in_dim: int, cfg: PoolingConfig):
        super().__init__()
        d = cfg.token_dim
        self.sampled = cfg.class_token == "sampled"
        self.token_eval, self.token_eval_entry = cfg.token_eval, cfg.token_eval_entry
        self.positions = cfg.token_positions == "sinusoidal"
        bank = cfg.token_bank if self.sampled else 1
        self.layer_weights_ = LayerWeights(num_states)
        self.input = nn.Linear(in_dim, d)
        self.token_mean = nn.Parameter(torch.randn(bank, d) * TOKEN_INIT_STD)
        logvar = 2 * math.log(NOISE_INIT * TOKEN_INIT_STD)
        self.token_logvar = nn.Parameter(torch.full((bank, d), logvar)) if self.sampled else None
        self.distill_token = nn.Parameter(torch.randn(1, d) * TOKEN_INIT_STD) if cfg.distill_token else None
        layer = EncoderLayer(d, cfg.token_heads, cfg.token_ffn, dropout=0.1, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.token_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.projection = nn.Linear(d, cfg.embed_dim)
        self.distill_projection = nn.Linear(d, cfg.embed_dim) if cfg.distill_token else None
        self.embed_dim = cfg.embed_dim

    def class_token(self, batch: int) -> torch.Tensor:
        if not self.sampled:
            return self.token_mean[0].expand(batch, 1, -1)
        if self.training:
            k = torch.randint(len(self.token_mean), (batch,), device=self.token_mean.device)
            mean = self.token_mean[k]
            return (mean + self.noise_std()[k] * torch.randn_like(mean))[:, None, :]
        if self.token_eval == "entry":  # one of the tokens training saw
            return self.token_mean[self.token_eval_entry].expand(batch, 1, -1)
        return self.token_mean.mean(0).expand(batch, 1, -1)  # bank_mean: a token no training step saw

    def noise_std(self) -> torch.Tensor:
        """(bank, dim): each entry's sampling std, bounded by the RMS of its mean (no gradient
        through the bound: the mean is not shrunk to make room for noise)."""
        rms = self.token_mean.detach().square().mean(1, keepdim=True).sqrt()
        return torch.minimum(torch.exp(0.5 * self.token_logvar), rms)

    def encode(self, states: list[torch.Tensor], mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.input(self.layer_weights_(states))
        if self.positions:
            x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device).to(x.dtype)
        tokens = [self.class_token(len(x))]
        if self.distill_token is not None:
            tokens.append(self.distill_token.expand(len(x), 1, -1))
        h = torch.cat(tokens + [x], dim=1)
        pad = None
        if mask is not None:
            pad = torch.cat([torch.zeros(len(x), len(tokens), dtype=torch.bool, device=x.device), ~mask], dim=1)
        h = self.norm(self.encoder(h, src_key_padding_mask=pad))
        distill = self.distill_projection(h[:, 1]) if self.distill_projection is not None else None
        return self.projection(h[:, 0]), distill

    def forward(self, states: list[torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.encode(states, mask)[0]

    def layer_weights(self) -> dict[str, torch.Tensor]:
        return {"layers": self.layer_weights_.weights()}


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """(length, dim): the fixed sine/cosine position code of Vaswani et al. (no parameter, any length)."""
    t = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(t * freq)
    pe[:, 1::2] = torch.cos(t * freq)[:, : dim // 2]
    return pe


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch."""
    t = F.log_softmax(teacher_logits / temperature, dim=1)
    s = F.log_softmax(student_logits / temperature, dim=1)
    return temperature**2 * F.kl_div(s, t, log_target=True, reduction="batchmean")
