"""Parameter-efficient adaptation of the SSL backbone, injected without
copying model code:

* Inner adapters: a bottleneck (Linear D->r, activation, Linear r->D, up-projection zero) in
  parallel to the self-attention block and to the feed-forward block of each chosen layer,
  added by forward hooks: block(x) + s * adapter(x). A w2v-BERT conformer block has two
  half-step feed-forward blocks: each gets one (its convolution module none).
* Inter adapters: x + s * adapter(x) on every layer's output on its way to the pooling
  (the transformer itself still passes the unadapted output to the next layer).
* LoRA on the attention's query and value projections (w2v-BERT: linear_q, linear_v), as a weight parametrization
  W + (alpha / r) B A: WavLM's attention reads q_proj.weight directly (it never calls q_proj),
  so hooking or wrapping the Linear module (as peft does) would be silently ignored.
With the zero initialisations, the adapted model starts exactly equal to the pre-trained one.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn.utils import parametrize

from voxadapt.config import AdapterConfig
from voxadapt.errors import VoxadaptError


class Bottleneck(nn.Module):
    def __init__(self, dim: int, bottleneck: int, activation: str):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.GELU() if activation == "gelu" else nn.ReLU()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(x)))


class LowRankDelta(nn.Module):
    """Parametrization W -> W + scale * B @ A (B starts at zero)."""

    def __init__(self, out_dim: int, in_dim: int, rank: int, alpha: float):
        super().__init__()
        self.lora_a = nn.Parameter(torch.empty(rank, in_dim))
        nn.init.kaiming_uniform_(self.lora_a, a=5**0.5)
        self.lora_b = nn.Parameter(torch.zeros(out_dim, rank))
        self.scale = alpha / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.scale * (self.lora_b @ self.lora_a)


def _parallel_hook(adapter: Bottleneck, scale: float, _module, args, kwargs, output):  # noqa: ANN001, ANN201
    x = args[0] if args else kwargs["hidden_states"]
    if isinstance(output, tuple):
        return (output[0] + scale * adapter(x), *output[1:])
    return output + scale * adapter(x)


def layer_blocks(layer: nn.Module) -> tuple[tuple[str, ...], str, tuple[str, str]]:
    """(blocks inner adapters run beside, the attention block, its query and value projections)
    of a transformer layer, or of a w2v-BERT conformer block."""
    if hasattr(layer, "conv_module"):
        return ("self_attn", "ffn1", "ffn2"), "self_attn", ("linear_q", "linear_v")
    return ("attention", "feed_forward"), "attention", ("q_proj", "v_proj")


def chosen_layers(cfg: AdapterConfig, num_layers: int) -> list[int]:
    layers = cfg.layers or list(range(num_layers))
    bad = [i for i in layers if not 0 <= i < num_layers]
    if bad:
        raise VoxadaptError(f"model.adapters.layers {bad} outside the backbone's {num_layers} layers")
    return layers


def add_inner_adapters(layers: nn.ModuleList, dim: int, cfg: AdapterConfig) -> None:
    for i in chosen_layers(cfg, len(layers)):
        layer = layers[i]
        for block in layer_blocks(layer)[0]:
            if not isinstance(getattr(layer, block, None), nn.Module):
                raise VoxadaptError(f"inner adapters need '{block}' blocks in each transformer layer; "
                                    f"{type(layer).__name__} has none: use a WavLM, HuBERT or wav2vec2 model")
            adapter = Bottleneck(dim, cfg.bottleneck, cfg.activation)
            layer.add_module(f"{block}_adapter", adapter)
            # A partial, not a closure: deepcopy (ONNX export copies the model) copies a partial's
            # arguments, so the copy's hook calls the copy's adapter; a closure would keep the original's.
            hook = functools.partial(_parallel_hook, adapter, cfg.scale)
            getattr(layer, block).register_forward_hook(hook, with_kwargs=True)


def add_lora(layers: nn.ModuleList, cfg: AdapterConfig) -> None:
    for i in chosen_layers(cfg, len(layers)):
        _, block, projections = layer_blocks(layers[i])
        attention = getattr(layers[i], block, None)
        for name in projections:
            proj = getattr(attention, name, None)
            if not isinstance(proj, nn.Linear):
                raise VoxadaptError(f"LoRA needs {block}.{name} linear layers; "
                                    f"{type(layers[i]).__name__} has none")
            parametrize.register_parametrization(
                proj, "weight", LowRankDelta(proj.out_features, proj.in_features, cfg.lora_rank, cfg.lora_alpha))


def is_adapter_param(name: str) -> bool:
    return "_adapter." in name or "inter_adapters." in name or ".lora_" in name


def merge_lora(model: nn.Module) -> None:
    """Fold LoRA deltas into the weights (W <- W + s B A) and drop the parametrizations."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module, "weight"):
            # The parametrized `weight` is a property of a class generated per module, and a
            # deepcopy shares that class with its original: removing the property from it would
            # break the original too. Give this module a class of its own first.
            cls = module.__class__
            module.__class__ = type(cls.__name__, cls.__bases__, dict(cls.__dict__))
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
