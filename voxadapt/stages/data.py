"""Stage 0: the configured corpus as validated Kaldi data dirs <data>/<set>/ with reco2dur and
trial lists (synthetic: generated; voxceleb: imported; kaldi: the user's dirs copied in)."""

from __future__ import annotations

import dataclasses
import logging

from voxadapt.config import Config
from voxadapt.data.kaldi_dir import write_table
from voxadapt.data.trials import read_enroll_map, read_trials
from voxadapt.data.validate import validate_data_dir
from voxadapt.fileio import StageMarker
from voxadapt.layout import DataLayout, enroll_map, trial_lists

log = logging.getLogger(__name__)


def fingerprint(cfg: Config) -> dict:
    d = cfg.data
    return {"corpus": d.corpus, "sample_rate": d.sample_rate, "min_duration": d.min_duration,
            d.corpus: dataclasses.asdict(getattr(d, d.corpus))}


def run(cfg: Config, data: DataLayout, nj: int = 1) -> None:
    marker = StageMarker(data.marker(0, "data"), fingerprint(cfg))
    if marker.is_done(outputs_hint=data.root):
        log.info("stage 0: %s already prepared (%s); nothing to do", data.root, cfg.data.corpus)
    else:
        prepare(cfg, data, nj)
        marker.mark_done()
        log.info("stage 0: data dirs ready under %s", data.root)
    for name in cfg.data.sets.degraded:  # its own marker: adding it later keeps the data above
        make_degraded(cfg, data, name, nj)


def prepare(cfg: Config, data: DataLayout, nj: int) -> None:
    sets = cfg.data.sets
    if cfg.data.corpus == "synthetic":
        from voxadapt.corpus.synthetic import generate_corpus

        generate_corpus(cfg.data, data.root, data.generated_audio / "synthetic", nj)
    elif cfg.data.corpus == "voxceleb":
        from voxadapt.corpus.voxceleb import prepare_voxceleb

        prepare_voxceleb(cfg.data.voxceleb, data.set_dir(sets.train), data.set_dir(sets.tests[0]), nj,
                         cfg.data.validation)
    else:
        from voxadapt.corpus.kaldi_import import import_kaldi_dirs

        import_kaldi_dirs(cfg.data, data.set_dir(sets.train), data.set_dir(sets.tests[0]), nj)
    # The user's Kaldi dirs were checked in place by the import; the others are checked here.
    finalize(cfg, data, [s for s in sets.all if s not in sets.degraded], nj, check_audio=cfg.data.corpus != "kaldi")


def make_degraded(cfg: Config, data: DataLayout, name: str, nj: int) -> None:
    """<test>_degraded: the first test set through conditions training never saw (data.degraded)."""
    from voxadapt.corpus.degrade import make_degraded_set
    from voxadapt.data.kaldi_dir import tables_digest

    src = data.set_dir(cfg.data.sets.tests[0])
    marker = StageMarker(data.marker(0, name), {"degraded": dataclasses.asdict(cfg.data.degraded),
                                                "sample_rate": cfg.data.sample_rate, "source": tables_digest(src)})
    if marker.is_done(outputs_hint=data.set_dir(name)):
        log.info("stage 0: %s already made; nothing to do", data.set_dir(name))
        return
    make_degraded_set(src, data.set_dir(name), cfg.data.degraded, cfg.data.sample_rate, nj)
    finalize(cfg, data, [name], nj, check_audio=True)
    marker.mark_done()


def finalize(cfg: Config, data: DataLayout, sets: list[str], nj: int, check_audio: bool) -> None:
    """Validate `sets` (tables, audio unless already done, trials) and write reco2dur."""
    for name in sets:
        d = validate_data_dir(data.set_dir(name), cfg.data.sample_rate, cfg.data.min_duration,
                              audio=cfg.data.validation if check_audio else "none", nj=nj,
                              sample=cfg.data.validation_sample, seed=cfg.seed)
        assert d.reco2dur is not None
        write_table(d.path / "reco2dur", ((r, f"{v:.4f}") for r, v in d.reco2dur.items()))
        lists = trial_lists(d.path)
        known: set[str] = set(d.utt2spk)
        if enroll_map(d.path).is_file():  # enrolment models the lists may name
            known |= set(read_enroll_map(enroll_map(d.path), known=d.utt2spk))
        for path in lists.values():
            read_trials(path, known=known)
        log.info("%s: %d utterances, %d speakers, %.1f h, trial lists: %s", d.path, len(d.utt2spk), len(d.spk2utt),
                 sum(d.reco2dur.values()) / 3600, ", ".join(p.name for p in lists.values()) or "none")
