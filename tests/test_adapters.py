"""Inner/inter adapters, LoRA, class token and distillation: the properties the methods rely on."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import MICRO
from safetensors.torch import load_file, save_file

from voxadapt.config import PoolingConfig, load_config
from voxadapt.errors import VoxadaptError
from voxadapt.models.adapters import is_adapter_param, merge_lora
from voxadapt.models.clstoken import ClassTokenPooling, kd_loss
from voxadapt.models.speaker import build_model
from voxadapt.train.optim import param_groups, set_trainable

ADAPTED = MICRO + ["model.adapters.inner=true", "model.adapters.inter=true", "model.adapters.lora=true",
                   "model.adapters.bottleneck=8", "train.phases.0.trainable_layers=0"]


def test_zero_initialised_adapters_leave_the_model_unchanged():
    base, _ = build_model(load_config(None, MICRO), 5)
    adapted, _ = build_model(load_config(None, ADAPTED), 5)
    base.eval()
    adapted.eval()
    wav = torch.randn(2, 16000)
    with torch.no_grad():
        a, _ = base.backbone(wav)
        b, _ = adapted.backbone(wav)
    # Two code paths (the LoRA parametrization adds a zero product): equal up to float rounding,
    # which differs between CPU kernels (AVX2 vs AVX-512), so the test states its tolerance.
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


def test_adapters_change_the_output_once_trained():
    adapted, _ = build_model(load_config(None, ADAPTED), 5)
    adapted.eval()
    wav = torch.randn(1, 16000)
    with torch.no_grad():
        before = adapted(wav)
        for name, p in adapted.named_parameters():
            if name.endswith(("up.weight", "lora_b")):
                p.add_(0.05)
        assert not torch.allclose(before, adapted(wav))


def test_only_adapters_layer_norms_pooling_and_head_get_gradients():
    cfg = load_config(None, ADAPTED)
    model, head = build_model(cfg, 5)
    set_trainable(model, head, 0)
    model.train()
    loss, _, _ = head(model(torch.randn(2, 16000)), torch.tensor([0, 1]), 0.2)
    loss.backward()
    for name, p in model.named_parameters():
        trained = p.grad is not None and p.grad.abs().sum() > 0
        should = name.startswith("pooling.") or is_adapter_param(name) or ("layer_norm" in name and "encoder" in name)
        if name.startswith("backbone.model.feature_extractor") or "original" in name:
            assert not p.requires_grad, name
        if trained:
            assert should, f"{name} got a gradient"
    groups = {g.name for g in param_groups(model, head, cfg.train.phases[0])}
    assert groups == {"pooling", "adapters"}


def test_adapter_weights_save_and_load_without_the_backbone(tmp_path):
    cfg = load_config(None, ADAPTED)
    model, _ = build_model(cfg, 5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if is_adapter_param(name):
                p.normal_()
    shipped = {k: v for k, v in model.state_dict().items() if is_adapter_param(k)}
    save_file(shipped, str(tmp_path / "adapters.safetensors"))
    fresh, _ = build_model(cfg, 5)
    missing, unexpected = fresh.load_state_dict(load_file(str(tmp_path / "adapters.safetensors")), strict=False)
    assert not unexpected and not any(is_adapter_param(k) for k in missing)
    for k, v in shipped.items():
        assert torch.equal(fresh.state_dict()[k], v)
    assert sum(v.numel() for v in shipped.values()) < sum(p.numel() for p in model.parameters()) / 2


def test_lora_merges_into_the_weights():
    model, _ = build_model(load_config(None, ADAPTED), 5)
    model.eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lora_b"):
                p.normal_(0, 0.1)
        wav = torch.randn(1, 16000)
        before = model(wav)
        merge_lora(model)
        assert not any(".lora_" in n for n, _ in model.named_parameters())
        assert torch.allclose(before, model(wav), atol=1e-5)


def test_merging_a_copy_leaves_the_original_working():
    # What export does: fold a deepcopy. The parametrized modules' classes are shared by the copy.
    model, _ = build_model(load_config(None, ADAPTED), 5)
    model.eval()
    wav = torch.randn(1, 16000)
    with torch.no_grad():
        before = model(wav)
        merge_lora(copy.deepcopy(model))
        assert torch.equal(before, model(wav))


def test_a_copy_runs_its_own_inner_adapters_and_exports(tmp_path):
    # A copy whose hooks still called the original's adapters could not be exported (the tracer
    # refuses the original's trainable weights as constants) and ignored changes to its own.
    from voxadapt.onnx_export import PARITY_COSINE, export_onnx

    model, _ = build_model(load_config(None, ADAPTED), 5)
    model.eval()
    wav = torch.randn(1, 16000)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        before = model(wav)
        for name, p in twin.named_parameters():
            if "_adapter.up." in name:
                p.normal_(0, 0.1)
        assert not torch.allclose(twin(wav), before, atol=1e-3)
        assert torch.equal(model(wav), before)
    assert any(p.requires_grad for p in twin.parameters())  # as a loaded model's are
    assert export_onnx(twin, tmp_path / "m.onnx", 16000, None) >= PARITY_COSINE


def test_adapters_need_transformer_blocks():
    from torch import nn

    from voxadapt.config import AdapterConfig
    from voxadapt.models.adapters import add_inner_adapters

    with pytest.raises(VoxadaptError, match="inner adapters need 'attention' blocks"):
        add_inner_adapters(nn.ModuleList([nn.Linear(4, 4)]), 4, AdapterConfig(inner=True))


CLS = MICRO + ["model.pooling.type=clstoken", "model.pooling.token_dim=16", "model.pooling.token_ffn=32",
               "model.pooling.class_token=sampled", "model.pooling.distill_token=true",
               "model.distill.teacher=exp/mhfa_tiny/model"]  # not loaded: build_model only


def test_sampled_class_token_is_random_in_training_and_fixed_in_eval():
    model, _ = build_model(load_config(None, CLS), 5)
    states = [torch.randn(2, 10, 32) for _ in range(3)]
    pooling = model.pooling
    pooling.train()
    assert not torch.equal(pooling.class_token(2), pooling.class_token(2))
    pooling.eval()
    with torch.no_grad():
        assert torch.equal(pooling(states), pooling(states))
        assert torch.equal(pooling.class_token(1)[0, 0], pooling.token_mean.mean(0))
    emb, distill = pooling.encode(states, None)
    assert emb.shape == distill.shape == (2, 32)


def token_pooling(**options) -> ClassTokenPooling:
    """A small sampled-class-token pooling over 3 layers of 32-dim frames, seeded."""
    torch.manual_seed(0)
    cfg = PoolingConfig(type="clstoken", token_dim=16, token_heads=2, token_ffn=32, token_layers=1, embed_dim=8,
                        class_token="sampled", token_bank=4, **options)
    return ClassTokenPooling(3, 32, cfg)


def test_class_token_test_time_rules():
    """Eval mode is deterministic and uses the configured token: the bank's mean or one entry's
    mean (each entry giving its own embedding)."""
    states = [torch.randn(2, 10, 32) for _ in range(3)]
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    mean, entry = token_pooling().eval(), token_pooling(token_eval="entry", token_eval_entry=2).eval()
    with torch.no_grad():
        for b in (mean, entry):
            assert torch.equal(b(states, mask), b(states, mask))
        assert torch.equal(mean.class_token(1)[0, 0], mean.token_mean.mean(0))
        assert torch.equal(entry.class_token(1)[0, 0], entry.token_mean[2])
        each = [token_pooling(token_eval="entry", token_eval_entry=k).eval()(states, mask) for k in range(4)]
        assert torch.equal(each[2], entry(states, mask)) and not torch.allclose(each[0], each[1])
    with pytest.raises(Exception, match="token_eval_entry must be a bank entry"):
        PoolingConfig(type="clstoken", token_bank=4, token_eval_entry=4)


def test_sampled_class_token_noise_stays_below_its_mean():
    """At initialisation the sampling noise is a small fraction of the means' scale (it was 7 times
    it), and however large the learned log-variance grows, the noise's std never exceeds its mean's RMS."""
    b = token_pooling().requires_grad_(False).train()
    drawn = b.class_token(256)[:, 0]
    cos = torch.nn.functional.cosine_similarity(drawn[:, None], b.token_mean[None], dim=2).amax(1)
    assert float(cos.min()) > 0.9  # every sample is recognisably one of the means
    rms = b.token_mean.square().mean(1, keepdim=True).sqrt()
    assert float((b.noise_std() / rms).max()) < 0.3
    b.token_logvar.fill_(10.0)
    torch.testing.assert_close(b.noise_std(), rms.expand(-1, 16))


def test_token_positions_make_the_class_token_see_frame_order():
    """Without a position code the transformer is blind to the frames' order (the class token's
    output is invariant to a permutation of the frames); the sinusoidal code makes it order-aware."""
    states = [torch.randn(2, 10, 32) for _ in range(3)]
    perm = torch.randperm(10)
    shuffled = [s[:, perm] for s in states]
    with torch.no_grad():
        plain = token_pooling().eval()
        torch.testing.assert_close(plain(states), plain(shuffled), rtol=1e-4, atol=1e-5)
        ordered = token_pooling(token_positions="sinusoidal").eval()
        assert not torch.allclose(ordered(states), ordered(shuffled), rtol=1e-3, atol=1e-4)


def test_test_time_rule_is_not_part_of_the_training_fingerprint():
    """Stages 3-4 do not read the test-time rule: changing it keeps the trained model; a marker
    written before token_positions existed matches a config without positions."""
    from voxadapt.compat import fingerprint_changes
    from voxadapt.models.speaker import model_fingerprint

    base = load_config(None, CLS)
    other = load_config(None, CLS + ["model.pooling.token_eval=entry", "model.pooling.token_eval_entry=3"])
    assert model_fingerprint(base.model) == model_fingerprint(other.model)
    old = {"model": model_fingerprint(base.model)}
    del old["model"]["pooling"]["token_positions"]
    assert fingerprint_changes(old, {"model": model_fingerprint(base.model)}) == []
    positions = load_config(None, CLS + ["model.pooling.token_positions=sinusoidal"])
    assert fingerprint_changes(old, {"model": model_fingerprint(positions.model)}) == ["model"]


def test_kd_loss_is_zero_when_student_matches_teacher():
    logits = torch.randn(4, 7)
    assert float(kd_loss(logits, logits.clone(), 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(kd_loss(logits, torch.randn(4, 7), 2.0)) > 0


def test_distillation_teacher_logits_are_at_the_scale_the_teacher_was_trained_with(tmp_path):
    """The head's scale is no weight: the teacher's logits are s * cos at its own phase's scale (32
    here, not AAMSoftmax's default 30), saved with the model dir; a dir written before the scale was
    saved takes it from the phase whose final model it is."""
    from voxadapt.config import DistillConfig
    from voxadapt.models.loading import load_speaker_model
    from voxadapt.models.speaker import save_model_dir
    from voxadapt.train.distill import Distiller

    cfg = load_config(None, MICRO + ["train.phases.0.scale=32"])
    model, head = build_model(cfg, 5)
    head.scale = cfg.train.phases[0].scale  # as the trainer sets it for the phase
    classes = [f"c{i}" for i in range(5)]
    final = tmp_path / "teacher" / "main" / "final"
    save_model_dir(final, cfg, model, head, classes)
    distiller = Distiller(DistillConfig(teacher=str(final)), classes, 32, torch.device("cpu"))
    assert distiller.teacher_head.scale == 32
    wav = torch.randn(2, 16000)
    with torch.no_grad():
        cos = distiller.teacher_head.cosine(distiller.teacher(wav))
    torch.testing.assert_close(distiller.teacher_logits(wav, None), 32 * cos)
    weights = final / "model.safetensors"  # as written before the scale was saved: no metadata
    save_file(load_file(str(weights)), str(weights), metadata={"format": "voxadapt"})
    (tmp_path / "teacher" / "model").symlink_to("main/final")
    assert load_speaker_model(tmp_path / "teacher" / "model").head.scale == 32


def test_distillation_config_is_checked():
    with pytest.raises(Exception, match="distill.teacher needs pooling.type clstoken"):
        load_config(None, MICRO + ["model.distill.teacher=/x"])


def test_contiguous_linear_inputs_change_no_output_or_gradient(monkeypatch):
    """The torch-function mode that gives frozen linears contiguous inputs (so torch runs one
    matrix product, not a batched one against an expanded weight) is arithmetic-neutral: outputs
    and adapter gradients with and without it agree to float32 rounding."""
    import voxadapt.models.backbone as backbone

    model, head = build_model(load_config(None, ADAPTED), 5)
    set_trainable(model, head, 0)
    model.eval()  # no dropout: the two passes must see the same computation
    wav = torch.randn(3, 16000)

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        out = model(wav)
        out.square().sum().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    with_mode = run()

    class Plain(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    monkeypatch.setattr(backbone, "ContiguousLinearInputs", Plain)
    without = run()
    torch.testing.assert_close(with_mode[0], without[0], rtol=1e-5, atol=1e-6)
    assert len(with_mode[1]) == len(without[1]) > 0
    for a, b in zip(with_mode[1], without[1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
