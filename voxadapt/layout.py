"""Where everything lives: the data and experiment trees, the set names, trial lists, stage markers.

This module is the one owner of paths: Python code asks it, and the shell scripts ask it once per
run (`python -m voxadapt.stages paths`, `pyscripts/evaluate.py paths`) and pass the answers to each
step explicitly, as Kaldi's steps take their directories as arguments. Only the roots (--data, --exp)
are chosen in the shell.

  <data>/<set>/                        Kaldi data dir (wav.scp, utt2spk, spk2utt, reco2dur, utt2dur, trials*)
  <data>/manifests/<set>/              lhotse recordings/supervisions/cuts (.jsonl.gz)
  <data>/manifests/augment/<kind>.jsonl.gz   noise, music, speech, rir recordings (stage 2)
  <data>/shards/<train>/               shar/ (training audio as lhotse Shar shards), index.tsv (stage 2, optional)
  <data>/audio/, <data>/augment/       generated audio (synthetic corpus, stand-in noises)
  <data>/<test>_degraded/              the degraded copy of the first test set: a data dir with its
                                       audio (flac/) and utt2condition (data.degraded)
  <data>/.done/stage<N>_<name>.json    stage markers
  <data>/<set>/split<N>dur/<n>/        a data dir's N parts of equal duration (stage 5's jobs)
  <exp>/<name>/config.yaml, <phase>/, model -> <phase>/final, log/, tensorboard/
  <exp>/<name>/embeddings/<set>/xvector.{ark,scp}, spk_xvector.{ark,scp}, num_utts.ark, log/extract.<n>.log
  <exp>/<name>/backend/                mean.vec, lda.mat, plda, cohort.ark, calibration.json
  <exp>/<name>/scores/<list>/          <method>.{score,llr}, det.png, histogram.png
  <exp>/<name>/RESULTS.md, results.json, package/, .done/stage<N>_<name>.json
  <dir>/.done.json                     marker of an output directory made as a whole (a split,
                                       a set's x-vectors, an evaluation's data)
  <dir>/.lock                          held by the run writing <dir> (<data>, <exp>/<name>, an evaluation)
A package (<exp>/<name>/package/, `PackageLayout`) and an evaluation directory (local/evaluate.sh,
`EvalLayout`) have layouts of their own; the files inside a model dir, a phase, a back-end, a set's
x-vectors, a scored list, the degraded set and pre-training are named by `ModelDirLayout`,
`PhaseLayout`, `BackendLayout`, `EmbeddingsLayout`, `ScoresLayout`, `DegradedSetLayout` and
`PretrainLayout`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from voxadapt.errors import VoxadaptError, located

CORPORA = ("synthetic", "voxceleb", "kaldi")
CUTS = "cuts.jsonl.gz"
MANIFEST_FILES = ("recordings.jsonl.gz", "supervisions.jsonl.gz", CUTS)
AUGMENT_KINDS = ("noise", "music", "speech", "rir")
# augment.weights: online kinds, the last two channels that need no resource
AUGMENT_WEIGHTS = ("reverb", "noise", "music", "babble", "telephone", "codec")
DEGRADE_CONDITIONS = ("room", "noise", "telephone", "codec")


class Under:
    """A path under a layout's root, declared in one line: `config = Under("config.yaml")`."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    def __get__(self, layout: object, owner: type | None = None) -> Path:
        if layout is None:  # looked up on the class, not a layout
            return self  # type: ignore[return-value]
        return layout.root.joinpath(*self.parts)  # type: ignore[attr-defined]


def dir_marker(directory: Path) -> Path:
    """The marker of an output directory made as a whole."""
    return directory / ".done.json"


def lock(directory: Path) -> Path:
    """The lock file a run holds on a directory it writes (utils/lock.sh)."""
    return directory / ".lock"


def split_dir(data_dir: Path, nj: int) -> Path:
    """<data-dir>/split<N>dur/<1..N>/: a data dir's N parts of about equal duration. Not Kaldi's
    split<N>, whose parts are by speaker, and which Kaldi tools may have made in the same dir."""
    return data_dir / f"split{nj}dur"


@dataclass(frozen=True)
class CorpusSets:
    """The data sets one corpus is prepared into by stage 0."""

    train: str
    dev: str | None  # held-out speakers with a trial list, for the validation EER during training
    tests: tuple[str, ...]
    degraded: tuple[str, ...] = ()  # '<test>_degraded' copies of tests[0] (data.degraded)

    @property
    def scored(self) -> list[str]:
        """The sets whose trial lists stage 7 scores."""
        return [*self.tests, *self.degraded]

    @property
    def all(self) -> list[str]:
        return [self.train, *([self.dev] if self.dev else []), *self.scored]


def corpus_sets(corpus: str, with_dev: bool, degraded: bool = False) -> CorpusSets:
    if corpus == "voxceleb":
        train, dev, tests = "vox2_dev", None, ("vox1",)
    else:
        train, dev, tests = "train", "dev" if corpus == "synthetic" and with_dev else None, ("test",)
    return CorpusSets(train, dev, tests, (f"{tests[0]}_degraded",) if degraded else ())


def trial_lists(set_dir: Path) -> dict[str, Path]:
    """A set's trial lists by name: <set>/trials is '<set>', <set>/trials_<x> is '<set>_<x>'."""
    return {set_dir.name + f.name[len("trials"):]: f for f in sorted(set_dir.glob("trials*"))
            if f.is_file() and (f.name == "trials" or f.name.startswith("trials_"))}


def enroll_map(set_dir: Path) -> Path:
    """<set>/enroll.map ('model utt1 utt2 ...', spk2utt format): models, each enrolled with all its
    utterances, that the first column of the set's trial lists may name (besides utterances)."""
    return set_dir / "enroll.map"


@dataclass(frozen=True)
class DataLayout:
    root: Path

    def set_dir(self, name: str) -> Path:
        return self.root / name

    def manifest_dir(self, name: str) -> Path:
        return self.manifests_root / name

    manifests_root = Under("manifests")

    def cuts(self, name: str) -> Path:
        return self.manifest_dir(name) / CUTS

    def shards(self, train: str) -> Path:
        return self.root / "shards" / train

    @property
    def augment_dir(self) -> Path:
        return self.manifest_dir("augment")

    def augment_manifest(self, kind: str) -> Path:
        return self.augment_dir / f"{kind}.jsonl.gz"

    generated_audio = Under("audio")
    generated_augment_audio = Under("augment")

    def marker(self, stage: int, name: str) -> Path:
        return self.root / ".done" / f"stage{stage}_{name}.json"


@dataclass(frozen=True)
class ScoredLayout:
    """What an experiment (stage 7) and an evaluation (local/evaluate.sh) both write when they score."""

    root: Path

    scores_dir = Under("scores")

    def scores(self, list_name: str) -> Path:
        """<method>.{score,llr}, det.png, histogram.png of one trial list."""
        return self.scores_dir / list_name

    results_md = Under("RESULTS.md")
    results_json = Under("results.json")


@dataclass(frozen=True)
class ExpLayout(ScoredLayout):
    root: Path  # <exp>/<name>

    @classmethod
    def of(cls, exp: str | Path, name: str) -> ExpLayout:
        return cls(Path(exp) / name)

    config = Under("config.yaml")

    def phase_dir(self, phase: str) -> Path:
        return self.root / phase

    model = Under("model")  # Link to the final phase's averaged model (stage 4).
    tensorboard = Under("tensorboard")
    log_dir = Under("log")  # Logs of the training stages (train.log, adapt.log; .node<R> per node).

    def embeddings(self, set_name: str) -> Path:
        return self.root / "embeddings" / set_name

    def xvector_scp(self, set_name: str) -> Path:
        return EmbeddingsLayout(self.embeddings(set_name)).xvector_scp

    backend = Under("backend")

    @property
    def calibration(self) -> Path:
        return BackendLayout(self.backend).calibration

    package = Under("package")

    def marker(self, stage: int, name: str) -> Path:
        return self.root / ".done" / f"stage{stage}_{name}.json"


@dataclass(frozen=True)
class EvalLayout(ScoredLayout):
    """local/evaluate.sh's output directory for one evaluation (a model on a new data dir)."""

    data_dir = Under("data")  # The checked copy of the user's data dir, with the trial list as data/trials.

    @property
    def trials(self) -> Path:
        return self.data_dir / "trials"

    embeddings = Under("embeddings")

    @property
    def xvector_scp(self) -> Path:
        return EmbeddingsLayout(self.embeddings).xvector_scp


@dataclass(frozen=True)
class PackageLayout:
    """A packaged model (stage 8): see voxadapt.package for what each file holds."""

    root: Path

    manifest = Under("voxadapt-model.json")
    config = Under("config.yaml")
    backbone = Under("backbone.json")
    weights = Under("model.safetensors")
    adapter_weights = Under("adapters.safetensors")
    backend = Under("backend")
    calibration = Under("calibration.json")
    onnx = Under("model.onnx")


def is_package(path: str | Path) -> bool:
    return PackageLayout(Path(path)).manifest.is_file()


def package_dir(path: str | Path) -> Path:
    """The package a user names: a package, or an experiment (exp/<name>) whose package/ is one.
    Anything else is returned as given, for read_manifest to say what it lacks."""
    path = Path(path)
    if not path.exists():
        raise VoxadaptError(located(path, None, "not found", "give a package (exp/<name>/package) or its experiment"))
    exp = ExpLayout(path)
    if is_package(path) or not path.is_dir():
        return path
    if is_package(exp.package):
        return exp.package
    if exp.config.is_file() or os.path.lexists(exp.model):
        raise VoxadaptError(located(path, None, "an experiment without a package",
                                    "make one with ./run.sh --stage 8 (after stages 3-7)"))
    return path


@dataclass(frozen=True)
class ModelSource:
    """Where a trained experiment (exp/<name>) or a package keeps what evaluation needs."""

    model: Path  # trained-model dir or package: what stage 5's jobs load
    backend: Path  # mean.vec, lda.mat, plda, cohort.ark
    calibration: Path
    config: Path

    @classmethod
    def find(cls, path: str | Path) -> ModelSource:
        """The one answer to "a trained experiment or a package?" (local/evaluate.sh asks it too)."""
        path = Path(path)
        if is_package(path):
            pkg = PackageLayout(path)
            source = cls(path, pkg.backend, pkg.calibration, pkg.config)
        elif path.is_dir() and (os.path.lexists(ExpLayout(path).model) or ExpLayout(path).backend.is_dir()):
            exp = ExpLayout(path)
            source = cls(exp.model, exp.backend, exp.calibration, ModelDirLayout(exp.model).config)
        else:
            raise VoxadaptError(located(path, None, "neither an experiment (exp/<name> with model/ and backend/) "
                                        "nor a package (voxadapt-model.json)", "give one of them with --model"))
        if source.model.is_symlink() and not source.model.exists():
            raise VoxadaptError(located(source.model, None, f"points to {os.readlink(source.model)}, which does "
                                        "not exist", "re-run stage 4 of the experiment"))
        for needed, made_by in ((source.config, "stages 3-4"), (BackendLayout(source.backend).mean, "stage 6"),
                                (source.calibration, "stage 6")):
            if not needed.is_file():
                raise VoxadaptError(located(needed, None, "missing", f"run {made_by} of the experiment first"))
        return source

    def eval_dir(self, name: str) -> Path:
        """local/evaluate.sh's default output, one per model: <experiment>/eval/<data> for an experiment,
        <package>_eval/<data> beside a package (a package stays as it was made)."""
        if is_package(self.model):
            return self.model.with_name(self.model.name + "_eval") / name
        return self.model.parent / "eval" / name  # exp/<name>/model's parent


@dataclass(frozen=True)
class ModelDirLayout:
    """A trained-model directory (a phase's final/, which <exp>/<name>/model links to), written
    whole by models.speaker.save_model_dir; a package keeps the same three first files."""

    root: Path

    config = Under("config.yaml")
    backbone = Under("backbone.json")
    weights = Under("model.safetensors")
    classes = Under("classes.txt")  # The training classes, one per line, in head-row order.

    @property
    def files(self) -> tuple[Path, ...]:
        return self.config, self.backbone, self.weights, self.classes


@dataclass(frozen=True)
class PhaseLayout:
    """<exp>/<name>/<phase>/: one training phase (train/trainer.py)."""

    root: Path

    checkpoints = Under("checkpoints")

    @property
    def final(self) -> ModelDirLayout:
        """The phase's averaged model."""
        return ModelDirLayout(self.root / "final")

    marker = Under("done.json")
    summary = Under("summary.json")
    layer_weights_png = Under("layer_weights.png")
    dropadapt_log = Under("dropadapt.tsv")


@dataclass(frozen=True)
class BackendLayout:
    """A back-end directory (stage 6's <exp>/<name>/backend/, a package's backend/) in Kaldi's
    formats; a Kaldi x-vector directory's transform.mat is read as the LDA."""

    root: Path

    mean = Under("mean.vec")
    lda = Under("lda.mat")
    kaldi_lda = Under("transform.mat")
    plda = Under("plda")
    cohort = Under("cohort.ark")
    plda_em = Under("plda_em.json")  # The PLDA's log-likelihood per EM iteration (stage 6).
    calibration = Under("calibration.json")  # Stage 6's calibrations (a package keeps its own beside backend/).

    @property
    def parameters(self) -> tuple[Path, ...]:
        """What scoring reads: the files a package copies."""
        return self.mean, self.lda, self.plda, self.cohort


@dataclass(frozen=True)
class EmbeddingsLayout:
    """A set's x-vectors (stage 5's <exp>/<name>/embeddings/<set>/, an evaluation's embeddings/)."""

    root: Path

    xvector_scp = Under("xvector.scp")  # Written last: its presence means the set is complete.
    spk_xvector_scp = Under("spk_xvector.scp")
    spk_xvector_ark = Under("spk_xvector.ark")
    num_utts = Under("num_utts.ark")
    info = Under("info.json")
    # The CPU jobs' ONNX graph, built by stage 5's split step (stages/extract.py), removed by the merge.
    engine = Under("engine")

    def job_scp(self, job: int) -> Path:
        return self.root / f"xvector.{job}.scp"

    def job_ark(self, job: int) -> Path:
        return self.root / f"xvector.{job}.ark"

    def job_marker(self, job: int) -> Path:
        return self.root / f".xvector.{job}.json"

    def job_log(self, job: int | str) -> Path:
        """One extraction job's log (job 'JOB' for $cmd JOB=1:N)."""
        return self.root / "log" / f"extract.{job}.log"


@dataclass(frozen=True)
class ScoresLayout:
    """A scored trial list's directory (<exp>/<name>/scores/<list>/, an evaluation's scores/<name>/)."""

    root: Path

    def scores(self, method: str) -> Path:
        return self.root / f"{method}.score"

    def llr(self, method: str) -> Path:
        return self.root / f"{method}.llr"

    det_png = Under("det.png")
    histogram_png = Under("histogram.png")


def trial_list(set_dir: Path) -> Path:
    """<set>/trials: a data dir's main trial list (the one stage 6 calibrates on and the
    validation EER scores; trial_lists finds the others)."""
    return set_dir / "trials"


@dataclass(frozen=True)
class PretrainLayout:
    """SSL pre-training's work directory (pretrain/trainer.py)."""

    root: Path

    data_dir = Under("data")  # the rendered corpus's data dir (unless pretrain.data_dir names one)
    audio = Under("audio")
    targets = Under("targets.npz")  # the k-means frame targets
    targets_marker = Under(".targets.json")
    checkpoints = Under("checkpoints")


def pretraining_summary(backbone_dir: Path) -> Path:
    """What SSL pre-training writes beside the Hugging Face model it makes: settings, loss history."""
    return backbone_dir / "pretraining.json"


@dataclass(frozen=True)
class DegradedSetLayout:
    """<data>/<test>_degraded/ (corpus/degrade.py): a data dir whose audio it holds."""

    root: Path

    audio = Under("flac")

    def utterance_audio(self, utt: str) -> Path:
        return self.audio / f"{utt}.flac"

    settings = Under("settings.json")  # The settings a (partial) copy was made with: one made with others is removed.
    utt2condition = Under("utt2condition")
