"""DropClass and DropAdapt: draws, head rows, sampler, hand-checked drops, resume, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import MICRO, assert_clean_error, make_data_dir, run_step, set_args

from voxadapt.config import DropAdaptConfig, DropClassConfig, load_config
from voxadapt.data.audio import read_utterance
from voxadapt.data.kaldi_dir import DataDir
from voxadapt.errors import VoxadaptError
from voxadapt.layout import DataLayout, ExpLayout
from voxadapt.models.aam import AAMSoftmax
from voxadapt.train.dropadapt import DropAdapt, adaptation_set
from voxadapt.train.dropclass import DropClass


def test_dropclass_draws_are_fresh_deterministic_and_rank_independent():
    dc = DropClass(DropClassConfig(every_steps=5, drop=4), 12, seed=3)
    a, b = dc.kept(0), dc.kept(4)
    assert np.array_equal(a, b) and len(a) == 8  # one draw in force from step 0 to 4
    c = dc.kept(5)
    assert len(c) == 8 and not np.array_equal(a, c)  # a fresh draw, not cumulative
    other_rank = DropClass(DropClassConfig(every_steps=5, drop=4), 12, seed=3)
    assert all(np.array_equal(dc.kept(s), other_rank.kept(s)) for s in range(0, 40, 5))
    with pytest.raises(VoxadaptError, match="must be less than the 12 training classes"):
        DropClass(DropClassConfig(every_steps=5, drop=12), 12, 0)


class Identity(torch.nn.Module):
    """A 'speaker model' whose embedding is the first two samples: a hand-computable head input."""

    def forward(self, wav):  # noqa: ANN001, ANN201
        return wav[:, :2]


def test_dropadapt_drops_exactly_the_least_probable_classes(tmp_path):
    head = AAMSoftmax(2, 4, scale=5.0)
    angles = torch.tensor([0.0, 0.5, 2.0, 3.0])
    with torch.no_grad():
        head.weight.copy_(torch.stack([torch.cos(angles), torch.sin(angles)], 1))
    audio = [np.array([np.cos(t), np.sin(t)] * 8000, dtype=np.float32) for t in (0.1, 0.3, 0.4)]
    da = DropAdapt(DropAdaptConfig(every_steps=1, drop=1, crop_seconds=0.5, rank="scaled"), 4, 0, audio, 16000,
                   ["a", "b", "c", "d"], tmp_path / "drops.tsv")
    da._crop_batches = lambda draw: iter([torch.tensor(np.stack([a[:2] for a in audio]))])  # no crop randomness
    emb = torch.tensor(np.stack([a[:2] for a in audio]))
    probs = torch.softmax(5.0 * head.cosine(emb), 1).sum(0).detach().numpy()
    order = np.argsort(probs)
    assert da.update(0, Identity(), head, torch.device("cpu")) == [int(order[0])]
    probs2 = torch.softmax(5.0 * head.cosine(emb, torch.tensor(np.delete(np.arange(4), order[0]))), 1).sum(0).detach().numpy()
    remaining = np.delete(np.arange(4), order[0])
    assert da.update(1, Identity(), head, torch.device("cpu")) == [int(remaining[np.argmin(probs2)])]
    assert da.dropped == [int(order[0]), int(remaining[np.argmin(probs2)])]  # cumulative, never restored
    rows = (tmp_path / "drops.tsv").read_text().splitlines()
    assert rows[0] == "step\tclass\tsummed_probability" and len(rows) == 3
    resumed = DropAdapt(DropAdaptConfig(every_steps=1, drop=1, crop_seconds=0.5, rank="scaled"), 4, 0, audio, 16000,
                        ["a", "b", "c", "d"], tmp_path / "drops.tsv")  # killed after step 1, resumed from step 0's state
    resumed._crop_batches, resumed.dropped = da._crop_batches, da.dropped[:1]
    resumed.update(1, Identity(), head, torch.device("cpu"))
    assert (tmp_path / "drops.tsv").read_text().splitlines() == rows  # step 1 logged once, not twice
    with pytest.raises(VoxadaptError, match="adaptation set has no audio"):
        DropAdapt(DropAdaptConfig(every_steps=1, drop=1), 4, 0, [], 16000, list("abcd"), tmp_path / "x")


def _unit_audio(angles: list[float]) -> list[np.ndarray]:
    """Utterances whose Identity 'embedding' is the unit vector at each angle."""
    return [np.array([np.cos(t), np.sin(t)] * 8000, dtype=np.float32) for t in angles]


def _dropadapt(cfg: DropAdaptConfig, head: AAMSoftmax, audio: list[np.ndarray], path) -> DropAdapt:  # noqa: ANN001
    da = DropAdapt(cfg, head.weight.shape[0], 0, audio, 16000, [str(c) for c in range(head.weight.shape[0])], path)
    da._crop_batches = lambda draw: iter([torch.tensor(np.stack([a[:2] for a in da.audio]))])  # no crop randomness
    return da


def _set_classes(head: AAMSoftmax, angles: list[float]) -> None:
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[np.cos(t), np.sin(t)] for t in angles], dtype=torch.float32))


def test_dropadapt_ranks_by_the_softmax_of_unscaled_cosines(tmp_path):
    """The authors' aggregate_probs: softmax of forward_drop(embeds), the cosines before the scale.
    Class 1 is every utterance's second best, class 2 one utterance's best: summed unscaled
    softmaxes drop class 2, scaled ones (near top-1 counts) class 1."""
    head = AAMSoftmax(2, 3, scale=30.0)
    _set_classes(head, [0.0, np.pi / 2, np.pi])
    audio = _unit_audio([0.0, 0.0, 0.0, np.pi])
    # by hand: cosines of an utterance at 0 to the classes are (1, 0, -1); at pi (-1, 0, 1)
    soft = np.exp([1.0, 0.0, -1.0]) / np.exp([1.0, 0.0, -1.0]).sum()
    by_hand = 3 * soft + soft[::-1]
    assert np.argmin(by_hand) == 2
    da = _dropadapt(DropAdaptConfig(every_steps=1, drop=1), head, audio, tmp_path / "a.tsv")
    np.testing.assert_allclose(da.class_probabilities(Identity(), head, np.arange(3), 0, torch.device("cpu")), by_hand,
                               rtol=1e-5)
    assert da.update(0, Identity(), head, torch.device("cpu")) == [2]
    scaled = _dropadapt(DropAdaptConfig(every_steps=1, drop=1, rank="scaled"), head, audio, tmp_path / "b.tsv")
    assert scaled.update(0, Identity(), head, torch.device("cpu")) == [1]  # the option: s x cosine


def test_dropadapt_data_only_reranks_every_class_each_round(tmp_path):
    """The authors' drop_adapt_onlydata: each round ranks all classes (the head never shrinks) and
    keeps all but the K least probable in the data; drops do not accumulate. data_only_cumulative adds them up."""
    head = AAMSoftmax(2, 3, scale=30.0)
    _set_classes(head, [0.0, np.pi / 2, np.pi])
    audio = _unit_audio([0.0, 0.0, 0.0, np.pi])
    da = _dropadapt(DropAdaptConfig(every_steps=1, drop=1, variant="data_only"), head, audio, tmp_path / "a.tsv")
    cumulative = _dropadapt(DropAdaptConfig(every_steps=1, drop=1, variant="data_only_cumulative"), head, audio,
                            tmp_path / "b.tsv")
    assert da.update(0, Identity(), head, torch.device("cpu")) == [2] == cumulative.update(0, Identity(), head,
                                                                                          torch.device("cpu"))
    # The target data moves to class 2's side: class 0 is now the least probable, and class 2, out of
    # the data since round 0, is ranked again and comes back.
    da.audio = cumulative.audio = _unit_audio([np.pi, np.pi, np.pi, 0.0])
    assert da.update(1, Identity(), head, torch.device("cpu")) == [0]
    assert da.dropped == [0] and da.kept().tolist() == [1, 2]
    assert cumulative.update(1, Identity(), head, torch.device("cpu")) == [0]  # among the kept 0 and 1 only
    assert cumulative.dropped == [2, 0] and cumulative.kept().tolist() == [1]


def test_a_drop_schedule_that_exhausts_the_classes_is_refused_before_training(tiny_data, tmp_path):
    """DropAdapt's K x rounds (from the phase's steps) must leave classes: refused when the first
    phase's trainer is made, before any phase trains, even for a stage-4 phase; data_only keeps all
    classes but K at every round, so the same schedule fits."""
    from voxadapt.train.distributed import init_distributed
    from voxadapt.train.dropadapt import check_drop_schedule
    from voxadapt.train.trainer import PhaseTrainer

    phase = load_config(None, ["adapt.phases=[{name: a, epochs: 2, dropadapt: {every_steps: 500, drop: 2000}}]"]).adapt.phases[0]
    check_drop_schedule(phase, 5994, 999, 2)  # rounds at steps 0 and 500: 1,994 classes left
    with pytest.raises(VoxadaptError, match=r"phase 'a': dropadapt drops 2000 classes at each of 3 rounds \(every 500 of "
                       r"its 1001 steps\), 6000 of the 5994 .* raise dropadapt.every_steps to at least 501 \(2 rounds\)"):
        check_drop_schedule(phase, 5994, 1001, 2)
    with pytest.raises(VoxadaptError, match="fewer than 128; .* lower dropadapt.drop to at most 1955"):
        check_drop_schedule(phase, 5994, 1001, 128)  # a batch of 128 distinct speakers
    adapt = "adapt.phases=[{{name: a, epochs: 1, dropadapt: {{every_steps: 1, drop: 10, variant: {}}}}}]"
    cfg = load_config(None, MICRO + [adapt.format("standard")])
    with pytest.raises(VoxadaptError, match="phase 'a': dropadapt drops 10 classes at each of .* of the 36 training classes"):
        PhaseTrainer(cfg, cfg.train.phases[0], 0, DataLayout(tiny_data), ExpLayout(tmp_path), None, init_distributed("cpu"))
    assert not ExpLayout(tmp_path).phase_dir("main").exists()  # nothing trained
    cfg = load_config(None, MICRO + [adapt.format("data_only")])
    PhaseTrainer(cfg, cfg.adapt.phases[0], 1, DataLayout(tiny_data), ExpLayout(tmp_path), None, init_distributed("cpu"))


def test_batch_classes_only_replaces_the_random_draws():
    """The authors' drop_per_batch replaces the random drop (train_speaker.py draws no classes with
    it): with batch_classes_only a K > 0 is refused unless with_draws asks for both."""
    with pytest.raises(Exception, match="dropclass.batch_classes_only replaces the random draws"):
        load_config(None, MICRO + ["train.phases.0.dropclass={every_steps: 5, drop: 6, batch_classes_only: true}"])
    both = load_config(None, MICRO + ["train.phases.0.dropclass={every_steps: 5, drop: 6, batch_classes_only: true, "
                                      "with_draws: true}"]).train.phases[0]
    per_batch = load_config(None, MICRO + ["train.phases.0.dropclass.batch_classes_only=true"]).train.phases[0]
    assert both.fingerprint()["dropclass"]["with_draws"] and "with_draws" not in per_batch.fingerprint()["dropclass"]
    with pytest.raises(Exception, match="dropclass.with_draws needs batch_classes_only true and drop > 0"):
        load_config(None, MICRO + ["train.phases.0.dropclass={every_steps: 5, drop: 6, with_draws: true}"])
    with pytest.raises(Exception, match="dropclass.reinit_head .* needs dropclass.drop > 0"):
        load_config(None, MICRO + ["train.phases.0.dropclass={batch_classes_only: true, reinit_head: true}"])


def test_adaptation_set_max_utts_takes_the_same_subset_for_a_seed(tmp_path):
    d = make_data_dir(tmp_path / "adapt", {"s1": 6, "s2": 6}, seconds=0.3)
    names = lambda subset: [u for _, u in subset.utterances]  # noqa: E731
    whole = adaptation_set(str(d), [], 0, seed=1)
    assert names(whole) == DataDir.load(d).utterance_ids
    sub = adaptation_set(str(d), [], 5, seed=1)
    assert len(sub) == 5 and names(sub) == names(adaptation_set(str(d), [], 5, seed=1))
    assert set(names(sub)) < set(names(whole)) and names(sub) != names(adaptation_set(str(d), [], 5, seed=2))
    assert adaptation_set(str(d), [], 50, seed=1).utterances == whole.utterances  # a cap above the set: all
    np.testing.assert_array_equal(sub[2], read_utterance(DataDir.load(d), names(sub)[2]))
    # Read and cropped a batch at a time; the batch size does not change a round's crops.
    da = DropAdapt(DropAdaptConfig(every_steps=1, drop=1, crop_seconds=0.2), 4, 0, whole, 16000, list("abcd"),
                   tmp_path / "drops.tsv")
    crops = torch.cat(list(da._crop_batches(3, size=5)))
    assert crops.shape == (12, 3200) and torch.equal(crops, next(da._crop_batches(3, size=32)))
    assert not torch.equal(crops, next(da._crop_batches(4, size=32)))  # each round draws new crops
    with pytest.raises(Exception, match="dropadapt.max_utts must be >= 0"):
        load_config(None, ["adapt.phases=[{name: a, dropadapt: {drop: 2, every_steps: 5, max_utts: -1}}]"])


def test_every_steps_zero_is_refused():
    with pytest.raises(Exception, match="dropclass.every_steps must be >= 1 when drop > 0"):
        load_config(None, MICRO + ["train.phases.0.dropclass.drop=3"])
    with pytest.raises(Exception, match="dropadapt.every_steps must be >= 1"):
        load_config(None, ["adapt.phases=[{name: a, dropadapt: {drop: 2}}]"])


@pytest.mark.slow
def test_no_dropped_class_reaches_a_batch_or_the_head(tiny_data, tmp_path):
    from voxadapt.train.distributed import init_distributed
    from voxadapt.train.trainer import PhaseTrainer

    cfg = load_config(None, MICRO + ["train.phases.0.dropclass.every_steps=5", "train.phases.0.dropclass.drop=20",
                                     "train.phases.0.epochs=1", "train.phases.0.average_last=1",
                                     "loader.num_workers=1"])
    trainer = PhaseTrainer(cfg, cfg.train.phases[0], 0, DataLayout(tiny_data), ExpLayout(tmp_path), None,
                           init_distributed("cpu"))
    seen = []
    original = PhaseTrainer._train_step

    def spy(self, batch, margin, step):  # noqa: ANN001, ANN202
        seen.append((batch["label"].numpy().copy(), self.head_classes.cpu().numpy().copy()))
        return original(self, batch, margin, step)

    PhaseTrainer._train_step = spy
    try:
        trainer.run()
    finally:
        PhaseTrainer._train_step = original
    assert len(seen) == 22
    for step, (labels, kept) in enumerate(seen):
        assert len(kept) == 16 and set(labels.tolist()) <= set(kept.tolist()), step
        assert np.array_equal(kept, trainer.dropclass.kept(step))


@pytest.mark.slow
def test_dropadapt_phase_scores_a_subset_of_the_enrolment_side(tiny_data, tmp_path):
    from voxadapt.train.distributed import init_distributed
    from voxadapt.train.trainer import PhaseTrainer

    cfg = load_config(None, MICRO + ["train.phases.0.dropadapt.every_steps=10", "train.phases.0.dropadapt.drop=4",
                                     "train.phases.0.dropadapt.max_utts=7", "train.phases.0.dropadapt.crop_seconds=0.5",
                                     "train.phases.0.epochs=1", "train.phases.0.average_last=1",
                                     "loader.num_workers=1"])
    trainer = PhaseTrainer(cfg, cfg.train.phases[0], 0, DataLayout(tiny_data), ExpLayout(tmp_path), None,
                           init_distributed("cpu"))
    trainer.run()
    enrolment = {line.split()[0] for line in (tiny_data / "test" / "trials").read_text().splitlines()}
    chosen = [u for _, u in trainer.dropadapt.audio.utterances]
    assert len(chosen) == 7 < len(enrolment) and set(chosen) <= enrolment
    rows = (ExpLayout(tmp_path).phase_dir(cfg.train.phases[0].name) / "dropadapt.tsv").read_text().splitlines()
    assert len(rows) == 1 + 3 * 4  # steps 0, 10, 20 of 22: 4 classes each


def test_bad_dropclass_values_are_clear_errors(tiny_data, tmp_path):
    proc = run_step("train", *set_args(MICRO + ["train.phases.0.dropclass.every_steps=5",
                                                 "train.phases.0.dropclass.drop=36"]),
                  "--data", str(tiny_data), "--exp", str(tmp_path))
    assert_clean_error(proc, "dropclass.drop 36 must be less than the 36 training classes")


def test_reinit_head_keeps_the_optimiser_state(tiny_data, tmp_path):
    """The authors' reset_affine_each_it re-initialises the classifier and leaves the optimiser
    alone (reinit_optimizer: true also resets the head's state: test_numerics' fused SGD test)."""
    from voxadapt.train.distributed import init_distributed
    from voxadapt.train.trainer import PhaseTrainer

    cfg = load_config(None, MICRO + ["train.phases.0.dropclass={every_steps: 2, drop: 4, reinit_head: true}"])
    trainer = PhaseTrainer(cfg, cfg.train.phases[0], 0, DataLayout(tiny_data), ExpLayout(tmp_path), None,
                           init_distributed("cpu"))
    trainer._build()
    weight = trainer.head.weight
    moments = {"exp_avg": torch.ones_like(weight), "exp_avg_sq": torch.ones_like(weight), "step": torch.tensor(3.0)}
    trainer.optimizer.state[weight] = moments
    before = weight.detach().clone()
    trainer._apply_drops(2)
    assert not torch.equal(before, weight)  # re-drawn
    assert trainer.optimizer.state[weight] is moments


def test_voxceleb_drop_configs_run_as_the_authors_did():
    """DropClass from step 0 of every stage-3 phase, on batches of distinct speakers (the authors'
    get_batches); DropAdapt's rounds fit VoxCeleb2 dev's 5,994 speakers over the phase's steps."""
    from pathlib import Path

    from voxadapt.data.sampler import epoch_batches
    from voxadapt.train.dropadapt import check_drop_schedule

    dc = load_config(Path("conf/dropclass_voxceleb.yaml"))
    assert dc.loader.sampler == "distinct_speakers"
    assert all((p.dropclass.every_steps, p.dropclass.drop) == (500, 2000) for p in dc.train.phases)
    da = load_config(Path("conf/dropadapt_voxceleb.yaml"))
    for phase in da.adapt.phases:
        steps = phase.epochs * epoch_batches(1_092_009, phase.batch_size or da.loader.batch_size, da.loader.batches_per_epoch)
        check_drop_schedule(phase, 5994, steps, 2)
