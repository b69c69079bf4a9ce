"""Backbones, MHFA, the baseline pooling, AAM-softmax, layer-wise rates, L2-SP, model dirs."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from helpers import MICRO

from voxadapt.config import load_config
from voxadapt.errors import VoxadaptError
from voxadapt.models.aam import AAMSoftmax
from voxadapt.models.backbone import build_hf_model
from voxadapt.models.loading import load_speaker_model
from voxadapt.models.mhfa import MHFA, WeightedSumASP
from voxadapt.models.speaker import build_model, save_model_dir
from voxadapt.train.optim import backbone_groups, param_groups, set_trainable
from voxadapt.train.regularize import L2SP


@pytest.fixture(scope="module")
def cfg():
    return load_config(None, MICRO)


def test_mhfa_shapes_and_layer_weights():
    torch.manual_seed(0)
    m = MHFA(num_states=5, in_dim=24, heads=4, compression_dim=8, embed_dim=16)
    states = [torch.randn(3, 11, 24) for _ in range(5)]
    out = m(states)
    assert out.shape == (3, 16)
    w = m.layer_weights()
    assert torch.allclose(w["keys"], torch.full((5,), 0.2)) and torch.allclose(w["values"], torch.full((5,), 0.2))
    # As the MHFA paper defines it: keys/values from separate weighted sums, key-only attention, per-head pooling.
    with torch.no_grad():
        m.key_weights.logits.copy_(torch.tensor([0.0, 1, 2, 3, 4]))
    k = sum(torch.softmax(m.key_weights.logits, 0)[i] * states[i] for i in range(5))
    v = sum(0.2 * states[i] for i in range(5))
    a = torch.softmax(m.attention(m.compress_key(k)), dim=1)
    pooled = torch.einsum("bth,btc->bhc", a, m.compress_value(v)).reshape(3, -1)
    assert torch.allclose(m(states), m.projection(pooled), atol=1e-6)
    assert sum(p.numel() for p in MHFA(13, 768, 64, 128, 256).parameters()) == pytest.approx(2.3e6, rel=0.05)


def test_padding_mask_ignores_padded_frames():
    torch.manual_seed(0)
    for pooling in (MHFA(3, 8, 2, 4, 6), WeightedSumASP(3, 8, 4, 6)):
        states = [torch.randn(1, 5, 8) for _ in range(3)]
        padded = [torch.cat([s, torch.randn(1, 4, 8)], 1) for s in states]
        mask = torch.tensor([[True] * 5 + [False] * 4])
        assert torch.allclose(pooling(states), pooling(padded, mask), atol=1e-6)


def test_aam_margin_against_hand_computation():
    head = AAMSoftmax(2, 3, scale=10.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    emb = torch.tensor([[math.cos(0.3), math.sin(0.3)]])  # 0.3 rad from class 0
    loss, logits, target = head(emb, torch.tensor([0]), margin=0.2)
    want = torch.tensor([[10 * math.cos(0.5), 10 * math.cos(math.pi / 2 - 0.3), 10 * math.cos(math.pi - 0.3)]])
    assert torch.allclose(logits, want, atol=1e-5) and int(target) == 0
    assert float(loss) == pytest.approx(float(torch.nn.functional.cross_entropy(want, torch.tensor([0]))), abs=1e-5)
    # Kept classes only: rows selected, label remapped.
    loss2, logits2, target2 = head(emb, torch.tensor([2]), margin=0.0, classes=torch.tensor([1, 2]))
    assert logits2.shape == (1, 2) and int(target2) == 1
    with pytest.raises(ValueError, match="outside the kept classes"):
        head(emb, torch.tensor([0]), margin=0.0, classes=torch.tensor([1, 2]))


def test_every_backbone_type_gives_all_hidden_states_and_batch_equals_single():
    arch = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64,
            "conv_dim": [16] * 7, "num_conv_pos_embeddings": 8, "num_conv_pos_embedding_groups": 4}
    for kind in ("wavlm", "hubert", "wav2vec2", "data2vec-audio"):
        extra = {"conv_pos_kernel_size": 5, "num_conv_pos_embeddings": 2} if kind == "data2vec-audio" else {}
        cfg = load_config(None, [f"model.backbone.type={kind}", "model.pooling.heads=2"])
        cfg.model.backbone.arch = {**arch, **extra}
        model, _ = build_model(cfg, 4)
        model.eval()
        wav, lengths = torch.randn(3, 20000), torch.tensor([20000, 13000, 7000])
        with torch.no_grad():
            states, mask = model.backbone(wav, lengths)
            assert len(states) == 4 and states[0].shape[-1] == 32
            batched = model(wav, lengths)
            single = torch.cat([model(wav[i:i + 1, : lengths[i]]) for i in range(3)])
        assert torch.allclose(batched, single, atol=1e-5), kind
        assert not any(p.requires_grad for p in model.backbone.model.feature_extractor.parameters())


def test_layerwise_rates_land_on_the_right_layers(cfg):
    model, head = build_model(cfg, 5)
    set_trainable(model, head, -1)
    phase = cfg.train.phases[0]
    groups = {g.name: g for g in param_groups(model, head, phase)}
    L = model.backbone.num_layers
    assert groups["pooling"].lr == phase.lr
    assert groups[f"layer{L - 1}"].lr == pytest.approx(phase.backbone_lr)
    assert groups["layer0"].lr == pytest.approx(phase.backbone_lr * phase.layer_decay ** (L - 1))
    assert groups["embedding"].lr == pytest.approx(phase.backbone_lr * phase.layer_decay**L)
    layer1 = {id(p) for p in model.backbone.layers[1].parameters()}
    assert {id(p) for p in groups["layer1"].params} == layer1
    set_trainable(model, head, 1)
    names = {g.name for g in param_groups(model, head, phase)}
    assert names == {"pooling", f"layer{L - 1}"}
    assert not any(p.requires_grad for p in model.backbone.layers[0].parameters())
    set_trainable(model, head, 0)
    assert model.backbone_frozen and [g.name for g in param_groups(model, head, phase)] == ["pooling"]
    assert sum(len(p) for _, p, _ in backbone_groups(model)) == len(
        [p for n, p in model.backbone.model.named_parameters() if not n.startswith("masked_spec")])


@pytest.mark.parametrize("direction", ["top", "bottom"])
def test_layer_decay_direction_for_a_factor_below_one(cfg, direction):
    """layer_decay 0.9. "top" (ours): the top layer gets backbone_lr, each layer below 0.9 x the one
    above, the input embedding and CNN the smallest rate. "bottom" (the MHFA authors' SLT22
    ModelTrainer: LR_Transformer * LLRD_factor^i, i = 0 the bottom layer): the bottom layer gets
    backbone_lr and upper layers less; the embedding and CNN, which that code never trains, the
    bottom layer's rate."""
    phase = dataclasses.replace(cfg.train.phases[0], layer_decay=0.9, layer_decay_from=direction)
    model, head = build_model(cfg, 5)
    set_trainable(model, head, -1, 0.1)
    lrs = {g.name: g.lr for g in param_groups(model, head, phase)}
    L, base = model.backbone.num_layers, phase.backbone_lr
    for i in range(L):
        assert lrs[f"layer{i}"] == pytest.approx(base * 0.9 ** (L - 1 - i if direction == "top" else i)), i
    lowest = base * 0.9**L if direction == "top" else base
    assert lrs["embedding"] == pytest.approx(lowest) and lrs["cnn"] == pytest.approx(lowest)
    assert lrs["pooling"] == phase.lr


@pytest.mark.parametrize("stable", [False, True])
def test_train_embedding_false_trains_the_transformer_layers_only(stable):
    """train_embedding false (the MHFA authors' SLT22 optimiser): feature projection, positional
    convolution and the encoder's LayerNorm (after the input for post-LN, after the top layer for
    pre-LN encoders) stay pre-trained and out of the optimiser; the layers, pooling and head train.
    true (the default, their WeSpeaker recipe): those train too."""
    cfg = load_config(None, MICRO)
    cfg.model.backbone.arch = {**cfg.model.backbone.arch, "do_stable_layer_norm": stable}
    model, head = build_model(cfg, 5)
    hf, phase = model.backbone.model, cfg.train.phases[0]
    assert model.backbone.stable_layer_norm == stable
    embed = {id(p) for m in (hf.feature_projection, hf.encoder.pos_conv_embed, hf.encoder.layer_norm) for p in m.parameters()}
    layers = [p for layer in model.backbone.layers for p in layer.parameters()]

    def trained() -> set[int]:
        return {id(p) for g in param_groups(model, head, phase) for p in g.params}

    set_trainable(model, head, -1)
    assert embed <= trained()
    set_trainable(model, head, -1, 0.0, train_embedding=False)
    assert not embed & trained() and not any(p.requires_grad for p in hf.parameters() if id(p) in embed)
    assert all(p.requires_grad for p in layers) and {id(p) for p in layers} <= trained()
    assert {id(p) for p in list(model.pooling.parameters()) + list(head.parameters())} <= trained()
    assert "embedding" not in {g.name for g in param_groups(model, head, phase)}


LAYERDROP_ARCH = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64,
                  "conv_dim": [16] * 7, "num_conv_pos_embeddings": 8, "num_conv_pos_embedding_groups": 4}


@pytest.mark.parametrize("kind", ["wavlm", "hubert", "wav2vec2", "data2vec-audio"])
def test_layerdrop_passes_a_dropped_layers_input_through_in_training_only(kind):
    """LayerDrop: the drops are a function of seed and step; in training a dropped layer's hidden
    state equals its input (still L + 1 states) and its weights get no gradient; in eval mode every
    layer runs, as without LayerDrop. WavLM's layer 0 (which computes the position bias) never drops."""
    extra = {"conv_pos_kernel_size": 5, "num_conv_pos_embeddings": 2} if kind == "data2vec-audio" else {}
    cfg = load_config(None, [f"model.backbone.type={kind}", "model.pooling.heads=2"])
    cfg.model.backbone.arch = {**LAYERDROP_ARCH, **extra}
    model, head = build_model(cfg, 4)
    set_trainable(model, head, -1)
    bb, L = model.backbone, 3
    wav = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        plain = bb(wav)[0]
    bb.enable_layerdrop(0.5)
    assert bb.droppable_layers() == (list(range(1, L)) if kind == "wavlm" else list(range(L)))
    draws = [bb.draw_layer_drops(7, s) for s in range(30)]
    assert draws == [bb.draw_layer_drops(7, s) for s in range(30)]  # the same on every rank and resume
    assert all(d <= set(bb.droppable_layers()) for d in draws)
    step = next(s for s, d in enumerate(draws) if 0 < len(d) < len(bb.droppable_layers()))
    drops = bb.draw_layer_drops(7, step)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(bb(wav)[0], plain))  # eval: every layer runs
    model.train()
    states, _ = bb(wav)
    assert len(states) == L + 1
    for i in range(L):
        assert torch.equal(states[i + 1], states[i]) == (i in drops), i
    head(model(wav), torch.tensor([0, 1]), 0.2)[0].backward()
    for i, layer in enumerate(bb.layers):
        assert all((p.grad is None) == (i in drops) for p in layer.parameters()), i


def test_l2sp_leaves_out_the_skipped_layers(cfg):
    """The L2-SP terms of the layers LayerDrop skips are left out: no gradient reaches them at all
    (under DDP, which has already counted them unused, one would be an error)."""
    model, head = build_model(cfg, 5)
    set_trainable(model, head, -1)
    ref = build_hf_model(cfg.model.backbone.type, "", cfg.model.backbone.arch, cfg.seed).state_dict()
    params = {k: p for k, p in model.backbone.model.named_parameters() if p.requires_grad}
    with torch.no_grad():
        for p in params.values():
            p.add_(0.01)
    bb = model.backbone
    bb.enable_layerdrop(0.5)
    step = next(s for s in range(30) if bb.draw_layer_drops(3, s))
    skip = bb.dropped_parameter_names()
    assert skip and skip == {k for k in params if k.startswith(tuple(f"encoder.layers.{i}." for i in bb.layer_drops))}
    for form in ("normalized", "plain"):
        L2SP(params, ref, form, 0.1).loss(torch.tensor(2.0, requires_grad=True), None, skip).backward()
        assert all((p.grad is None) == (k in skip) for k, p in params.items()), (form, step)
        for p in params.values():
            p.grad = None


def _cnn_step(cfg, scale: float, lengths: torch.Tensor | None):
    """(embeddings, CNN gradients, other backbone gradients) of one training step of the micro model
    with the CNN's gradient scaled by `scale` (0: frozen): the same weights, inputs and dropout each time."""
    model, head = build_model(cfg, 5)
    set_trainable(model, head, -1, scale)
    model.train()
    wav, labels = torch.randn(3, 16000, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2])
    torch.manual_seed(2)
    emb = model(wav, lengths)
    head(emb, labels, 0.2)[0].backward()
    cnn = model.backbone.model.feature_extractor
    above = [p for n, p in model.backbone.model.named_parameters() if p.grad is not None and not n.startswith("feature_extractor")]
    return emb.detach(), [p.grad for p in cnn.parameters()], [p.grad for p in above], param_groups(model, head, cfg.train.phases[0])


@pytest.mark.parametrize("batched", [False, True])
def test_cnn_gradient_is_scaled_and_the_forward_pass_unchanged(cfg, monkeypatch, batched):
    """cnn_grad_scale s: the CNN's gradients are s times those of an unscaled run, everything else
    (embeddings, the other gradients) is as with s = 1; on both CNN paths: one utterance at a time
    (CPU, unequal lengths) and one batched call (GPU, equal lengths)."""
    lengths = None if batched else torch.tensor([16000, 12000, 9000])
    if batched:
        monkeypatch.setattr("voxadapt.models.backbone.cpu_tuned", lambda _device: False)
    emb1, cnn1, above1, groups1 = _cnn_step(cfg, 1.0, lengths)
    emb, cnn, above, groups = _cnn_step(cfg, 0.1, lengths)
    assert torch.equal(emb, emb1) and len(cnn) == len(cnn1) > 0
    assert all(g is not None and g.abs().sum() > 0 for g in cnn1)
    for g, g1 in zip(cnn, cnn1):
        assert torch.allclose(g, 0.1 * g1, rtol=1e-4, atol=1e-5 * float(g1.abs().max())), float((g - 0.1 * g1).abs().max() / g1.abs().max())
    assert len(above) == len(above1) > 0 and all(torch.equal(a, b) for a, b in zip(above, above1))
    # The CNN trains at the input embedding's lr.
    by_name = {g.name: g for g in groups}
    assert by_name["cnn"].lr == by_name["embedding"].lr
    assert len(by_name["cnn"].params) == len(cnn)


def test_cnn_stays_frozen_at_scale_zero(cfg):
    """cnn_grad_scale 0 (the default): no gradient reaches the CNN, it is not in the optimiser, and
    the embeddings are those of a run that trains the CNN."""
    emb0, cnn0, above0, groups0 = _cnn_step(cfg, 0.0, torch.tensor([16000, 12000, 9000]))
    emb, _, above, _ = _cnn_step(cfg, 0.1, torch.tensor([16000, 12000, 9000]))
    assert torch.equal(emb0, emb) and all(g is None for g in cnn0)
    assert len(above0) == len(above) and all(torch.equal(a, b) for a, b in zip(above0, above))
    assert "cnn" not in {g.name for g in groups0}
    model, head = build_model(cfg, 5)
    set_trainable(model, head, -1)
    in_optimizer = {id(p) for g in param_groups(model, head, cfg.train.phases[0]) for p in g.params}
    assert not in_optimizer & {id(p) for p in model.backbone.model.feature_extractor.parameters()}
    with pytest.raises(ValueError, match="needs trainable_layers -1"):
        set_trainable(model, head, 1, 0.1)


def test_l2sp_covers_a_trained_cnn(cfg):
    """With the CNN trained, L2-SP's parameters (the trainable backbone tensors, as the trainer
    picks them) include the CNN, its reference the pre-trained CNN."""
    model, head = build_model(cfg, 5)
    set_trainable(model, head, -1, 0.1)
    ref = build_hf_model(cfg.model.backbone.type, "", cfg.model.backbone.arch, cfg.seed).state_dict()
    params = {k: p for k, p in model.backbone.model.named_parameters() if p.requires_grad and k in ref}
    cnn = [k for k in params if k.startswith("feature_extractor.")]
    assert cnn and set(cnn) == {f"feature_extractor.{n}" for n, _ in model.backbone.model.feature_extractor.named_parameters()}
    reg = L2SP(params, ref, "plain", 0.01)
    with torch.no_grad():
        assert float(reg.squared()) == 0.0
        params[cnn[0]].add_(0.1)
        assert float(reg.squared()) == pytest.approx(0.01 * params[cnn[0]].numel(), rel=1e-4)


def test_l2sp_is_zero_at_start_and_grows(cfg):
    model, head = build_model(cfg, 5)
    set_trainable(model, head, -1)
    ref = build_hf_model(cfg.model.backbone.type, "", cfg.model.backbone.arch, cfg.seed).state_dict()
    params = {k: p for k, p in model.backbone.model.named_parameters() if p.requires_grad}
    for form in ("normalized", "plain"):
        reg = L2SP(params, ref, form, 0.01)
        assert float(reg.distance()) == 0.0 and float(reg.squared()) == 0.0
    with torch.no_grad():
        next(iter(params.values())).add_(0.1)
    d1 = float(reg.distance())
    with torch.no_grad():
        next(iter(params.values())).add_(0.1)
    assert 0 < d1 < float(reg.distance())
    ce = torch.tensor(2.0, requires_grad=True)
    assert float(L2SP(params, ref, "plain", 0.5).loss(ce)) == pytest.approx(2.0 + 0.5 * float(reg.squared()), rel=1e-5)
    assert float(L2SP(params, ref, "normalized", 0.01).loss(ce)) == pytest.approx(1.0 + 0.01 * d1 * 2 / (d1 * 2 + 1e-5), rel=1e-4)


def test_model_dir_round_trip_and_bad_dirs(cfg, tmp_path):
    model, head = build_model(cfg, 5)
    save_model_dir(tmp_path / "m", cfg, model, head, [f"c{i}" for i in range(5)])
    loaded = load_speaker_model(tmp_path / "m")
    again, cfg2, classes = loaded.model, loaded.cfg, loaded.classes
    wav = torch.randn(1, 16000)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(wav), again(wav))
    assert classes == ["c0", "c1", "c2", "c3", "c4"] and cfg2 == cfg
    with pytest.raises(VoxadaptError, match="model.safetensors: missing"):
        (tmp_path / "m" / "model.safetensors").unlink()
        load_speaker_model(tmp_path / "m")


def test_not_an_ssl_model_dir(tmp_path):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(VoxadaptError, match="model_type 'bert' is not an SSL speech model"):
        build_hf_model("wavlm", str(tmp_path / "bert"), {}, 0)
    with pytest.raises(VoxadaptError, match="not a transformers model directory"):
        build_hf_model("wavlm", str(tmp_path), {}, 0)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "config.json").write_text('{"model_type": "hubert"}')
    with pytest.raises(VoxadaptError, match="a hubert model, the config says wavlm"):
        build_hf_model("wavlm", str(tmp_path / "w"), {}, 0)
    with pytest.raises(VoxadaptError, match="transformers cannot build a wavlm model"):
        build_hf_model("wavlm", "", {"hidden_size": 30, "num_attention_heads": 4}, 0)


def test_pretrained_dir_loads_with_from_pretrained(cfg, tmp_path):
    hf = build_hf_model("wavlm", "", cfg.model.backbone.arch, 3)
    hf.save_pretrained(tmp_path / "pre")
    again = build_hf_model("wavlm", str(tmp_path / "pre"), {}, 0)
    for (k, a), (_, b) in zip(hf.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k
