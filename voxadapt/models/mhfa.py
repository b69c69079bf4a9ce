"""MHFA: multi-head factorized attentive pooling (Peng et al., SLT 2022).

Keys and values are two separate softmax-weighted sums of the L+1 hidden states, each compressed
to c dims; attention weights over time come from the compressed keys alone (one score per head,
no query vectors); each head pools the compressed values; the concatenated heads are projected
to the speaker embedding. No dropout or normalisation inside.
"""

from __future__ import annotations

import torch
from torch import nn


def masked_softmax_over_time(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax over dim 1 of (B, T, H) scores, ignoring padded frames."""
    if mask is not None:
        scores = scores.masked_fill(~mask[:, :, None], float("-inf"))
    return torch.softmax(scores, dim=1)


class LayerWeights(nn.Module):
    """softmax(w) over the L+1 hidden states, initialised to equal weights."""

    def __init__(self, num_states: int):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_states))

    def forward(self, states: list[torch.Tensor]) -> torch.Tensor:
        w = torch.softmax(self.logits, dim=0)
        out = states[0] * w[0]
        for i in range(1, len(states)):
            out = out + states[i] * w[i]
        return out

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.logits.detach(), dim=0)


class MHFA(nn.Module):
    def __init__(self, num_states: int, in_dim: int, heads: int = 64, compression_dim: int = 128, embed_dim: int = 256):
        super().__init__()
        self.key_weights = LayerWeights(num_states)
        self.value_weights = LayerWeights(num_states)
        self.compress_key = nn.Linear(in_dim, compression_dim)
        self.compress_value = nn.Linear(in_dim, compression_dim)
        self.attention = nn.Linear(compression_dim, heads)
        self.projection = nn.Linear(heads * compression_dim, embed_dim)
        self.embed_dim = embed_dim

    def forward(self, states: list[torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        keys = self.compress_key(self.key_weights(states))  # (B, T, c)
        values = self.compress_value(self.value_weights(states))  # (B, T, c)
        attn = masked_softmax_over_time(self.attention(keys), mask)  # (B, T, h)
        pooled = torch.einsum("bth,btc->bhc", attn, values)  # one c-dim vector per head
        return self.projection(pooled.flatten(1))

    def layer_weights(self) -> dict[str, torch.Tensor]:
        return {"keys": self.key_weights.weights(), "values": self.value_weights.weights()}


class WeightedSumASP(nn.Module):
    """The SUPERB-style baseline: one weighted sum of layers, attentive statistics pooling, linear."""

    def __init__(self, num_states: int, in_dim: int, attention_dim: int = 128, embed_dim: int = 256):
        super().__init__()
        self.layer_weights_ = LayerWeights(num_states)
        self.attention = nn.Sequential(nn.Linear(in_dim, attention_dim), nn.Tanh(), nn.Linear(attention_dim, in_dim))
        self.projection = nn.Linear(2 * in_dim, embed_dim)
        self.embed_dim = embed_dim

    def forward(self, states: list[torch.Tensor], mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.layer_weights_(states)  # (B, T, D)
        w = masked_softmax_over_time(self.attention(x), mask)  # per-channel weights over time
        mean = (w * x).sum(1)
        std = torch.sqrt(((w * x * x).sum(1) - mean**2).clamp(min=1e-6))
        return self.projection(torch.cat([mean, std], dim=1))

    def layer_weights(self) -> dict[str, torch.Tensor]:
        return {"layers": self.layer_weights_.weights()}
