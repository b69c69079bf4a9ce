"""Batch sampling: determinism, class restriction, distinct speakers, DDP shares, mid-epoch resume."""

from __future__ import annotations

import numpy as np
import pytest

from voxadapt.data.sampler import SpeakerBatchSampler
from voxadapt.errors import VoxadaptError

LABELS = np.repeat(np.arange(20), 5)  # 20 classes x 5 utterances


def batches(sampler, n=None):
    out = []
    for spec in sampler:
        out.append(spec)
        if n is not None and len(out) == n:
            break
    return out


@pytest.mark.parametrize("mode", ["utterance", "distinct_speakers"])
def test_deterministic_for_a_seed(mode):
    a = batches(SpeakerBatchSampler(LABELS, 8, seed=3, mode=mode))
    b = batches(SpeakerBatchSampler(LABELS, 8, seed=3, mode=mode))
    c = batches(SpeakerBatchSampler(LABELS, 8, seed=4, mode=mode))
    assert [x.examples for x in a] == [x.examples for x in b] != [x.examples for x in c]
    assert [x.seeds for x in a] == [x.seeds for x in b]


def test_epochs_differ_and_cover_the_data():
    s = SpeakerBatchSampler(LABELS, 10, seed=0)
    e0 = [i for b in batches(s) for i in b.examples]
    assert sorted(e0) == list(range(100))
    s.set_epoch(1)
    e1 = [i for b in batches(s) for i in b.examples]
    assert sorted(e1) == list(range(100)) and e1 != e0


@pytest.mark.parametrize("mode", ["utterance", "distinct_speakers"])
def test_restriction_is_respected_from_then_on(mode):
    s = SpeakerBatchSampler(LABELS, 6, seed=0, mode=mode)
    allowed = np.arange(0, 20, 2)
    s.restrict(allowed)
    seen = {int(LABELS[i]) for b in batches(s) for i in b.examples}
    assert seen <= set(allowed.tolist()) and len(seen) > 1
    s.restrict(None)
    s.set_epoch(1)
    assert {int(LABELS[i]) for b in batches(s) for i in b.examples} - set(allowed.tolist())


def test_distinct_speakers_per_batch():
    s = SpeakerBatchSampler(LABELS, 12, seed=1, mode="distinct_speakers")
    for b in batches(s):
        labels = LABELS[b.examples]
        assert len(set(labels.tolist())) == len(labels) == 12
    with pytest.raises(VoxadaptError, match="exceeds the 20 classes"):
        SpeakerBatchSampler(LABELS, 32, seed=1, mode="distinct_speakers")


@pytest.mark.parametrize("mode", ["utterance", "distinct_speakers"])
def test_ranks_split_the_global_batch(mode):
    whole = batches(SpeakerBatchSampler(LABELS, 8, seed=2, mode=mode))
    r0 = batches(SpeakerBatchSampler(LABELS, 8, seed=2, mode=mode, world_size=2, rank=0))
    r1 = batches(SpeakerBatchSampler(LABELS, 8, seed=2, mode=mode, world_size=2, rank=1))
    for w, a, b in zip(whole, r0, r1):
        assert w.examples == a.examples + b.examples and w.seeds == a.seeds + b.seeds
    with pytest.raises(VoxadaptError, match="not divisible"):
        SpeakerBatchSampler(LABELS, 9, seed=2, world_size=2)


@pytest.mark.parametrize("mode", ["utterance", "distinct_speakers"])
def test_resume_mid_epoch_gives_the_same_remaining_batches(mode):
    full = SpeakerBatchSampler(LABELS, 8, seed=5, mode=mode)
    full.restrict(np.arange(15))
    reference = batches(full)
    first = SpeakerBatchSampler(LABELS, 8, seed=5, mode=mode)
    first.restrict(np.arange(15))
    consumed = batches(first, 4)  # a DataLoader may have produced more; only consumed counts
    batches(first, 2)
    state = first.state_dict(at=consumed[-1].state_after)
    resumed = SpeakerBatchSampler(LABELS, 8, seed=5, mode=mode)
    resumed.load_state_dict(state)
    rest = batches(resumed)
    assert [b.examples for b in consumed + rest] == [b.examples for b in reference]
    assert [b.seeds for b in consumed + rest] == [b.seeds for b in reference]


def test_restricting_everything_away_is_an_error():
    s = SpeakerBatchSampler(LABELS, 4, seed=0)
    with pytest.raises(VoxadaptError, match="no training class left"):
        s.restrict(np.zeros(20, dtype=bool))
