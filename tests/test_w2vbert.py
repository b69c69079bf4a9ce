"""w2v-BERT 2.0 as a backbone: its filterbanks equal SeamlessM4TFeatureExtractor's, all its hidden
states reach the back-end, adapters and LoRA sit in its conformer blocks, it exports to ONNX, and
its directories are checked before work starts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import MICRO, MICRO_ARCH

from voxadapt.config import load_config
from voxadapt.errors import ConfigError, VoxadaptError
from voxadapt.models.adapters import is_adapter_param
from voxadapt.models.backbone import build_hf_model, check_backbone
from voxadapt.models.speaker import build_model
from voxadapt.models.w2vbert import W2vBertFbank
from voxadapt.train.optim import backbone_groups, param_groups, set_trainable

# A tiny conformer: 2 blocks of 32 dims (the real one: 24 of 1,024).
W2VBERT_ARCH = ('{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, '
                '"conv_depthwise_kernel_size": 5}')
W2VBERT = [o for o in MICRO if not o.startswith("model.backbone.arch")] + [
    "model.backbone.type=w2v-bert", f"model.backbone.arch={W2VBERT_ARCH}"]
ADAPTED = W2VBERT + ["model.adapters.inner=true", "model.adapters.inter=true", "model.adapters.lora=true",
                     "model.adapters.bottleneck=8", "train.phases.0.trainable_layers=0"]
# Normalised filterbanks (unit variance per bin): the largest difference to the extractor's, whose
# log energies are rounded to float32 before normalising, in the signals below is 1.2e-4.
FBANK_TOLERANCE = 5e-4


def _signals() -> list[np.ndarray]:
    """Noise with a DC offset; a loud 16-bit tone under a syllable-rate envelope; a quiet one
    starting in digital silence; the shortest input (two frames); odd and even frame counts. (A
    perfectly steady tone is left out: its bins barely vary over the utterance, and the extractor's
    own float32 rounding of the log energies, divided by that spread, reaches 1e-2.)"""
    rng = np.random.default_rng(0)
    t = np.arange(23_456) / 16000
    loud = np.round(0.9 * np.sin(2 * np.pi * 440 * t) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)) * 32767) / 32768
    quiet = np.concatenate([np.zeros(4000), 0.001 * rng.standard_normal(9000)])
    return [x.astype(np.float32) for x in (0.1 * rng.standard_normal(16_000) + 0.05, loud, quiet,
                                           0.1 * rng.standard_normal(560), 0.1 * rng.standard_normal(12_345))]


def test_filterbanks_equal_the_seamless_feature_extractor_per_utterance_and_batched():
    from transformers import SeamlessM4TFeatureExtractor

    extractor, fbank = SeamlessM4TFeatureExtractor(), W2vBertFbank()
    wavs = _signals()
    for w in wavs:
        ref = extractor(w, sampling_rate=16000, return_tensors="pt")
        ours, mask = fbank(torch.from_numpy(w)[None])
        want = ref["input_features"][0][ref["attention_mask"][0].bool()]  # an odd last frame is padding there
        assert mask is None and ours.shape[1:] == want.shape, len(w)
        torch.testing.assert_close(ours[0], want, rtol=0, atol=FBANK_TOLERANCE)
    ref = extractor(wavs, sampling_rate=16000, return_tensors="pt", padding=True)
    lengths = torch.tensor([len(w) for w in wavs])
    batch = torch.zeros(len(wavs), int(lengths.max()))
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = torch.from_numpy(w)
    ours, mask = fbank(batch, lengths)
    frames = ours.shape[1]  # the extractor pads to an even frame count: at most one all-padding frame more
    assert ref["input_features"].shape[1] in (frames, frames + 1)
    assert torch.equal(mask, ref["attention_mask"][:, :frames].bool()) and not ref["attention_mask"][:, frames:].any()
    torch.testing.assert_close(ours * mask[..., None], ref["input_features"][:, :frames] * mask[..., None],
                               rtol=0, atol=FBANK_TOLERANCE)


def test_w2vbert_gives_all_hidden_states_batch_equals_single_and_trains_every_group():
    """L + 1 states (the feature projection's output and each conformer block's); no CNN, so no
    'cnn' parameters; the feature projection is the input embedding, one layer-decay step below
    block 0; a few steps move every group and lower the loss."""
    cfg = load_config(None, W2VBERT)
    model, head = build_model(cfg, 4)
    bb = model.backbone
    assert bb.num_layers == 2 and bb.droppable_layers() == [0, 1]
    model.eval()
    wav, lengths = torch.randn(3, 20_000), torch.tensor([20_000, 13_000, 7_000])
    with torch.no_grad():
        states, mask = bb(wav, lengths)
        assert len(states) == 3 and all(s.shape == (3, 61, 32) for s in states)
        assert mask.sum(1).tolist() == [61, 39, 21]  # (1 + (n - 400) // 160) // 2
        single = torch.cat([model(wav[i:i + 1, : lengths[i]]) for i in range(3)])
        torch.testing.assert_close(model(wav, lengths), single, rtol=0, atol=1e-5)
    set_trainable(model, head, -1)
    groups = {name: params for name, params, _ in backbone_groups(model)}
    assert groups["cnn"] == []
    assert {id(p) for p in groups["embedding"]} == {id(p) for p in bb.model.feature_projection.parameters()}
    phase = cfg.train.phases[0]
    lrs = {g.name: g.lr for g in param_groups(model, head, phase)}
    assert lrs["embedding"] == pytest.approx(lrs["layer0"] * phase.layer_decay)
    optimizer = torch.optim.Adam([p for p in list(model.parameters()) + list(head.parameters()) if p.requires_grad], lr=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.train()
    labels, wav = torch.tensor([0, 1, 2, 3]), torch.randn(4, 16_000, generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(5):
        loss = head(model(wav), labels, 0.0)[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    moved = {n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])}
    assert {n.split(".")[4] for n in moved if n.startswith("backbone.model.encoder.layers.")} == {"0", "1"}
    assert any(n.startswith("backbone.model.feature_projection.") for n in moved)


def test_adapters_and_lora_sit_in_the_conformer_blocks():
    """Inner adapters beside self-attention and both half-step feed-forward blocks, LoRA on
    linear_q and linear_v of every block: zero-initialised (the model starts unchanged), the only
    backbone weights that train in a frozen phase, and they change the embedding once trained."""
    base, _ = build_model(load_config(None, W2VBERT), 5)
    cfg = load_config(None, ADAPTED)
    adapted, head = build_model(cfg, 5)
    for layer in adapted.backbone.layers:
        assert {n for n, _ in layer.named_children() if n.endswith("_adapter")} == {"self_attn_adapter", "ffn1_adapter",
                                                                                     "ffn2_adapter"}
        assert {n for n in ("linear_q", "linear_k", "linear_v") if hasattr(getattr(layer.self_attn, n), "parametrizations")} \
            == {"linear_q", "linear_v"}
    base.eval()
    adapted.eval()
    wav = torch.randn(1, 16_000)
    with torch.no_grad():
        for x, y in zip(base.backbone(wav)[0], adapted.backbone(wav)[0]):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
    set_trainable(adapted, head, 0)
    trained = {n for n, p in adapted.backbone.named_parameters() if p.requires_grad}
    assert trained and all(is_adapter_param(n) or "layer_norm" in n for n in trained)
    with torch.no_grad():
        before = adapted(wav)
        for name, p in adapted.named_parameters():
            if "ffn2_adapter.up." in name:
                p.normal_(0, 0.1)
        assert not torch.allclose(adapted(wav), before, atol=1e-3)


def test_onnx_graph_of_an_adapted_w2vbert_matches_pytorch(tmp_path):
    """The graph takes waveforms (the filterbanks are in it), at any length."""
    from voxadapt.onnx_export import PARITY_COSINE, export_onnx

    model, _ = build_model(load_config(None, ADAPTED), 5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "_adapter.up." in name or "lora_b" in name:
                p.normal_(0, 0.1)
    model.eval()
    assert export_onnx(model, tmp_path / "m.onnx", 16000, -26.0) >= PARITY_COSINE


# ---------------------------------------------------------------------------------- bad inputs


def _w2vbert_dir(path, preprocessor: dict | None):
    build_hf_model("w2v-bert", "", json.loads(W2VBERT_ARCH), 0).save_pretrained(path)
    if preprocessor is not None:
        (path / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return path


HUB_PREPROCESSOR = {"feature_extractor_type": "SeamlessM4TFeatureExtractor", "feature_size": 80, "num_mel_bins": 80,
                    "padding_side": "right", "padding_value": 1, "processor_class": "Wav2Vec2BertProcessor",
                    "return_attention_mask": True, "sampling_rate": 16000, "stride": 2}


def test_a_w2vbert_directory_loads_like_a_wavlm_one_and_bad_ones_are_named(tmp_path):
    good = _w2vbert_dir(tmp_path / "good", HUB_PREPROCESSOR)
    backbone = load_config(None, ["model.backbone.type=w2v-bert", f"model.backbone.path={good}"]).model.backbone
    check_backbone(backbone)
    model, _ = build_model(load_config(None, ["model.backbone.type=w2v-bert", f"model.backbone.path={good}",
                                              "model.pooling.heads=2"]), 3)
    assert model.backbone.fbank is not None and not model.backbone.normalize_waveform
    cases = {
        "missing": (_w2vbert_dir(tmp_path / "missing", None), "preprocessor_config.json: missing"),
        "8k": (_w2vbert_dir(tmp_path / "8k", {**HUB_PREPROCESSOR, "sampling_rate": 8000}), "sampling_rate is 8000"),
        "other": (_w2vbert_dir(tmp_path / "other", {**HUB_PREPROCESSOR, "feature_extractor_type": "Wav2Vec2FeatureExtractor"}),
                  "feature_extractor_type is 'Wav2Vec2FeatureExtractor'"),
    }
    for path, message in cases.values():
        with pytest.raises(VoxadaptError, match=message) as err:
            check_backbone(load_config(None, ["model.backbone.type=w2v-bert", f"model.backbone.path={path}"]).model.backbone)
        assert "\n" not in str(err.value) and "facebook/w2v-bert-2.0" in str(err.value)
    wavlm = tmp_path / "wavlm"
    build_hf_model("wavlm", "", json.loads(MICRO_ARCH), 0).save_pretrained(wavlm)
    with pytest.raises(VoxadaptError, match="a wavlm model, the config says w2v-bert"):
        build_hf_model("w2v-bert", str(wavlm), {}, 0)
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(VoxadaptError, match="model_type 'bert' is not an SSL speech model"):
        build_hf_model("w2v-bert", str(tmp_path / "bert"), {}, 0)
    with pytest.raises(ConfigError, match="data.sample_rate 8000: a w2v-bert backbone reads 16 kHz"):
        load_config(None, W2VBERT + ["data.sample_rate=8000"])
    with pytest.raises(ConfigError, match="a w2v-bert backbone has none"):
        load_config(None, W2VBERT + ["train.phases.0.cnn_grad_scale=0.1"])
    with pytest.raises(VoxadaptError, match="feature_projection_input_dim 80"):
        build_model(load_config(None, [o.replace('"hidden_size": 32', '"feature_projection_input_dim": 80, "hidden_size": 32')
                                       for o in W2VBERT]), 3)


@pytest.mark.parametrize("name", ["WavLM-Large.pt", "w2v-bert.pth"])
def test_a_pt_checkpoint_file_is_named_with_the_fix(tmp_path, name):
    """The MHFA authors' recipe loads Microsoft's WavLM-*.pt files; this one reads transformers
    directories and says how to get one."""
    pt = tmp_path / name
    torch.save({"cfg": {}, "model": {}}, pt)
    for build in (lambda: build_hf_model("wavlm", str(pt), {}, 0),
                  lambda: check_backbone(load_config(None, [f"model.backbone.path={pt}"]).model.backbone)):
        with pytest.raises(VoxadaptError, match="is a PyTorch checkpoint file, not a model directory") as err:
            build()
        assert "\n" not in str(err.value) and "--local-dir" in str(err.value)
