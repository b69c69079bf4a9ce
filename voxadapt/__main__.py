"""The `voxadapt` command: embed, verify, score and export with a packaged model.

    voxadapt embed MODEL a.wav dir/ ...            (files, or every .wav/.flac/.ogg/.mp3 under a dir; Kaldi text on stdout)
    voxadapt embed MODEL --list files.txt --out ark,scp:x.ark,x.scp
    voxadapt embed MODEL --wav-scp wav.scp --out ark,scp:x.ark,x.scp   (paths or 'cmd |' pipes)
    voxadapt verify MODEL a.wav b.wav [--json] [--exit-code]   (score, LLR, accept/reject)
    voxadapt score MODEL --trials trials --scp xvector.scp [--out scores] [--utt2dur F|DIR] [--cohort-scp F] [--json]
                   [--enroll-map enroll.map | --enroll-scp spk_xvector.scp --num-utts num_utts.ark]
    voxadapt export-onnx MODEL model.onnx

MODEL is a package (exp/<name>/package) or its experiment (exp/<name>). Options may come before,
between or after the files. x-vector tables (--scp, --enroll-scp, --cohort-scp) are an scp file, an
archive (x.ark) or a Kaldi rspecifier (scp:F, ark:F, ark:-, 'ark:cmd |').
verify --exit-code: 0 accept, 3 reject (1: a user error, 2: a usage or internal error).
embed --skip-bad: 0 when at least one file was embedded, 1 when none was.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from voxadapt.pyscript import ArgumentParser, run_main

REJECTED = 3  # verify --exit-code: 1 and 2 already mean a user error and a usage/internal error
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")  # what soundfile (libsndfile >= 1.1) decodes
EMBED_CHUNK = 32  # files read and embedded at a time: memory stays bounded on long lists


def _probability(text: str) -> float:
    try:
        p = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number; give a prior such as 0.01") from None
    if not 0.0 < p < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not strictly between 0 and 1; give a prior such as 0.01")
    return p


def _positive(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"{text} must be above 0")
    return x


def _channel(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"'{text}' is not a channel number (0, 1, ...)")
    return int(text)


def _wspecifier(text: str) -> str:
    """Kaldi wspecifiers that kaldiio writes: ark:F, ark,t:F, ark,scp:F.ark,F.scp (and scp-first)."""
    kinds, sep, rest = text.partition(":")
    flags = kinds.split(",")
    if not sep or not rest or flags[0] not in ("ark", "scp") or not set(flags) <= {"ark", "scp", "t", "b", "f", "nf"}:
        raise argparse.ArgumentTypeError(f"'{text}' is not a Kaldi wspecifier; write ark:x.ark, ark,t:x.txt "
                                         "or ark,scp:x.ark,x.scp")
    if "ark" in flags and "scp" in flags and len(rest.split(",")) != 2:
        raise argparse.ArgumentTypeError(f"'{text}': ark,scp needs two files, e.g. ark,scp:x.ark,x.scp")
    return text


class _AnyOrder(ArgumentParser):
    """A subcommand's parser taking options anywhere: `embed PKG --vad a.wav` as well as `embed PKG a.wav --vad`.
    (Plain argparse gives the files before an option to the first positional and refuses those after.)"""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201 - argparse's signature
        if self._intermixing:  # parse_known_intermixed_args calls back here for its two passes
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="voxadapt", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="full tracebacks instead of one-line errors")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_AnyOrder)

    def common(sp: argparse.ArgumentParser, audio: bool = True) -> None:
        sp.add_argument("model", help="packaged model directory (exp/<name>/package), or its experiment (exp/<name>)")
        sp.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
        sp.add_argument("--method", help="cosine, asnorm or plda (default: the package's best)")
        if audio:
            sp.add_argument("--batch-size", type=_positive, default=200.0, help="seconds of audio per batch")
            sp.add_argument("--channel", type=_channel, help="the channel to use from multi-channel files (0-based)")
            sp.add_argument("--allow-upsample", action="store_true", help="accept audio below the model's rate")
            sp.add_argument("--vad", action="store_true", default=None,
                            help="drop silence and pauses first (energy VAD; default: as the model's config says)")

    e = sub.add_parser("embed", help="embeddings of audio files")
    common(e)
    e.add_argument("wavs", nargs="*", help="audio files or directories (ids are the paths)")
    e.add_argument("--list", help="a text file with one audio path per line instead")
    e.add_argument("--wav-scp", help="a Kaldi wav.scp instead: 'id path' or 'id cmd |' (VOXADAPT_NO_PIPES=1 refuses pipes)")
    e.add_argument("--out", type=_wspecifier, help="Kaldi wspecifier, e.g. ark,scp:x.ark,x.scp (default: text on stdout)")
    e.add_argument("--skip-bad", action="store_true",
                   help="skip files that cannot be embedded (too short, silent, unreadable, ...), naming each on "
                        "stderr, and embed the rest; exit 1 only when none could be embedded")
    e.add_argument("--engine", choices=["auto", "torch", "onnx", "onnx-int8"], default="auto",
                   help="auto and onnx: on a CPU, the package's model.onnx through onnxruntime (faster, "
                        "embeddings equal to cosine 0.9999); onnx-int8: that graph with int8 matrix multiplies, "
                        "used if its embeddings of the first 3 inputs match to cosine 0.999; torch: PyTorch (default: auto)")
    v = sub.add_parser("verify", help="do two recordings come from the same speaker?")
    common(v)
    v.add_argument("a")
    v.add_argument("b")
    v.add_argument("--p-target", type=_probability, default=0.5,  # api.DEFAULT_P_TARGET (not imported: torch)
                   help="prior of a target trial for the decision (default: 0.5, accept when the LLR is positive)")
    v.add_argument("--json", action="store_true", help="print the result as one JSON object")
    v.add_argument("--exit-code", action="store_true", help="exit 0 on accept and 3 on reject")
    s = sub.add_parser("score", help="score a trial list from x-vectors made with this model")
    common(s, audio=False)
    s.add_argument("--trials", required=True)
    s.add_argument("--scp", required=True)
    s.add_argument("--enroll-scp", help="x-vectors of the enrolment side, if separate (utterances, or models)")
    s.add_argument("--enroll-map", help="model -> its utterances (spk2utt format): speaker-level enrolment")
    s.add_argument("--num-utts", help="Kaldi num_utts.ark (text) for the models of --enroll-scp")
    s.add_argument("--out", help="score file: 'enroll test score llr' (default: stdout)")
    s.add_argument("--utt2dur", metavar="FILE|DIR",
                   help="durations of the utterances, for the LLRs of a duration-aware or QMF calibration: the "
                        "data dir (its reco2dur, and segments), or a utt2dur file (a reco2dur without segments)")
    s.add_argument("--cohort-scp", help="AS-norm cohort x-vectors (default: the package's training speakers)")
    s.add_argument("--json", action="store_true", help="print a JSON summary (needs --out for the scores)")
    x = sub.add_parser("export-onnx", help="waveform -> embedding as ONNX")
    x.add_argument("model", help="packaged model directory (exp/<name>/package), or its experiment (exp/<name>)")
    x.add_argument("out")
    x.add_argument("--int8", action="store_true", help="int8 matrix multiplies (onnxruntime dynamic quantisation)")
    return p


def cli(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    from voxadapt.layout import package_dir

    args.model = package_dir(args.model)  # before torch loads: a wrong path fails at once
    items = _embed_items(args) if args.command == "embed" else []
    from voxadapt.api import OptionNames, SpeakerVerifier

    if args.command == "export-onnx":
        from pathlib import Path

        from voxadapt.errors import VoxadaptError
        from voxadapt.layout import PackageLayout
        from voxadapt.onnx_export import export_int8, export_onnx, external_data

        out = Path(args.out)
        if out.is_dir():
            raise VoxadaptError(f"{out}: is a directory; give the file to write, e.g. {PackageLayout(out).onnx}")
        if not out.parent.is_dir():
            raise VoxadaptError(f"{out.parent}: directory not found; create it first")
        v = SpeakerVerifier(args.model)
        if args.int8:
            cosine = export_int8(v.model, out, v.sample_rate, v.cfg.extract.level_dbfs)
            print(f"{args.out}: waveform (1, samples) at {v.sample_rate} Hz -> embedding, int8 matrix multiplies; "
                  f"int8 vs fp32 cosine {cosine:.6f} on a noise probe (check it on your own audio)")
            return 0
        cosine = export_onnx(v.model, out, v.sample_rate, v.cfg.extract.level_dbfs)
        weights = f" (weights in {external_data(out)}: keep the two together)" if external_data(out).is_file() else ""
        print(f"{args.out}: waveform (1, samples) at {v.sample_rate} Hz -> embedding{weights}; "
              f"ONNX vs PyTorch cosine {cosine:.6f}")
        return 0
    v = SpeakerVerifier(args.model, args.device, args.method, getattr(args, "batch_size", 200.0),
                        getattr(args, "vad", None), options=OptionNames("--channel N", "--allow-upsample", "--sample-rate"))
    if args.command == "embed":
        return _embed(v, args, items)
    if args.command == "verify":
        r = v.verify(args.a, args.b, args.p_target, args.channel, args.allow_upsample)
        if args.json:
            import dataclasses
            import json

            print(json.dumps({"a": args.a, "b": args.b, **dataclasses.asdict(r)}))
        else:
            print(f"score {r.score:.4f} ({r.method})  llr {r.llr:.3f}  threshold {r.threshold:.3f} "
                  f"(p_target {r.p_target})  -> {'accept: same speaker' if r.accept else 'reject: different speakers'}")
        return REJECTED if args.exit_code and not r.accept else 0
    return _score(v, args)


def _embed_items(args) -> list[tuple[str, str]]:  # noqa: ANN001
    """(id, path or pipe) for each input: files and directories, --list, or --wav-scp."""
    from pathlib import Path

    from voxadapt.data.kaldi_dir import read_lines, read_table
    from voxadapt.errors import VoxadaptError

    if sum(map(bool, (args.wavs, args.list, args.wav_scp))) > 1:
        raise VoxadaptError("give audio files or directories, --list or --wav-scp, not several")
    if args.wav_scp:
        items = [(k, line.value) for k, line in read_table(Path(args.wav_scp), check_order=False).items()]
    elif args.list:
        items = [(p.strip(), p.strip()) for p in read_lines(Path(args.list)) if p.strip()]
    else:
        items = []
        for w in args.wavs:
            if Path(w).is_dir():
                found = sorted(str(p) for p in Path(w).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
                if not found:
                    raise VoxadaptError(f"{w}: no {'/'.join(AUDIO_SUFFIXES)} files in this directory")
                items += [(p, p) for p in found]
            else:
                items.append((w, w))
    if not items:
        raise VoxadaptError("nothing to embed: give audio files, a directory, --list or --wav-scp")
    return items


def _embed(v, args, items: list[tuple[str, str]]) -> int:  # noqa: ANN001
    import contextlib
    from pathlib import Path

    import kaldiio
    import torch
    from tqdm import tqdm

    from voxadapt.embed import embed_waveforms, probe_waveforms
    from voxadapt.errors import VoxadaptError
    from voxadapt.layout import PackageLayout
    from voxadapt.onnx_export import extraction_engine

    graph = PackageLayout(v.path).onnx
    probes = []
    if args.engine == "onnx-int8":  # the int8 graph is checked on the first 3 inputs that read (bad ones: below)
        for _, path in items[:EMBED_CHUNK]:
            if len(probes) == 3:
                break
            with contextlib.suppress(VoxadaptError):
                probes.append(v.waveform(path, args.channel, args.allow_upsample))
        probes = probe_waveforms(probes, v.sample_rate, v.cfg.extract)
    v.model = extraction_engine(v.model, v.device, args.engine, v.sample_rate, torch.get_num_threads(),
                                graph if graph.is_file() else None, probes)
    skipped = 0
    writer = None  # opened at the first embedding: a run that embeds nothing writes nothing
    try:
        with contextlib.ExitStack() as stack:
            bar = stack.enter_context(tqdm(total=len(items), desc="embedding", unit="file",
                                           disable=len(items) < EMBED_CHUNK, file=sys.stderr))
            for start in range(0, len(items), EMBED_CHUNK):
                chunk, keys, wavs = items[start:start + EMBED_CHUNK], [], []
                for key, path in chunk:
                    try:
                        wavs.append(v.waveform(path, args.channel, args.allow_upsample))
                        keys.append(key)
                    except VoxadaptError as err:
                        if not args.skip_bad:
                            hint = "; or pass --skip-bad to embed the other files and list the bad ones"
                            raise VoxadaptError(f"{err}{hint if len(items) > 1 else ''}") from None
                        skipped += 1
                        print(f"skipped: {err}", file=sys.stderr)
                vectors = embed_waveforms(v.model, wavs, v.sample_rate, v.cfg.extract, v.device) if wavs else []
                for key, vec in zip(keys, vectors):
                    if args.out and writer is None:
                        writer = stack.enter_context(kaldiio.WriteHelper(args.out))
                    if writer is not None:
                        writer(key, vec)
                    else:
                        print(f"{key}  [ {' '.join(f'{x:.6g}' for x in vec)} ]")
                bar.update(len(chunk))
    except VoxadaptError:
        if writer is not None:  # a bad file after the first chunks: no partial archive is left behind
            for name in args.out.partition(":")[2].split(","):
                if name != "-" and not name.lstrip().startswith("|"):
                    Path(name).unlink(missing_ok=True)
        raise
    if args.skip_bad:
        summary = f"embedded {len(items) - skipped} of {len(items)} files, skipped {skipped} (listed above)"
        if skipped == len(items):
            raise VoxadaptError(f"{summary}: nothing to write; fix the files or give others")
        print(summary, file=sys.stderr)
    return 0


def _durations(source: str) -> dict[str, float]:
    """Utterance durations from --utt2dur: a data dir (reco2dur, and segments when it has them), or a table."""
    from pathlib import Path

    from voxadapt.data.kaldi_dir import DataDir, read_table
    from voxadapt.errors import DataError, located

    path = Path(source)
    if path.is_dir():
        return DataDir.load(path).utt2dur()
    if path.name == "reco2dur" and (path.parent / "segments").is_file():
        raise DataError(located(path, None, "durations of recordings, but the dir has segments",
                                f"give the data dir instead (--utt2dur {path.parent})"))
    try:
        return {k: float(line.value) for k, line in read_table(path, check_order=False).items()}
    except ValueError:
        raise DataError(located(path, None, "durations must be numbers of seconds",
                                "make it with Kaldi's utils/data/get_utt2dur.sh")) from None


def _score(v, args) -> int:  # noqa: ANN001
    import json

    from voxadapt.backend.enrollment import enrolment_side
    from voxadapt.backend.scoring import Embeddings, write_scores
    from voxadapt.backend.trial_list import score_list, with_cohort
    from voxadapt.errors import VoxadaptError

    if args.json and not args.out:
        raise VoxadaptError("--json prints a summary on stdout; give --out for the scores")
    durations = _durations(args.utt2dur) if args.utt2dur else None
    calibration = v.calibrations[v.method]
    if calibration.quality and durations is None:
        print(f"WARNING: no LLRs: this package's calibration ({calibration.form}) needs the utterances' durations; "
              "pass --utt2dur with their data dir (e.g. --utt2dur data/test) or a utt2dur file", file=sys.stderr)
    emb = Embeddings.from_scp(args.scp)
    enrolment = enrolment_side(emb, args.enroll_scp, args.enroll_map, args.num_utts)
    scored = score_list(args.trials, emb, with_cohort(v.backend, args.cohort_scp), [v.method], v.manifest["asnorm_top_n"],
                        enrolment, {v.method: calibration}, durations, args.utt2dur, p_targets=[0.01, 0.05])
    scores, llr = scored.scores[v.method], scored.llrs[v.method]
    write_scores(args.out or None, scored.trials, scores, llr)
    summary: dict = {"trials": len(scored.trials), "method": v.method, "scores": args.out, "llr": llr is not None,
                     **scored.metrics.get(v.method, {})}
    if args.json:
        print(json.dumps(summary))
    elif "eer" in summary:
        print(f"EER {100 * summary['eer']:.2f}% over {len(scored.trials)} trials ({v.method})", file=sys.stderr)
    return 0


def main() -> None:
    run_main(cli)


if __name__ == "__main__":
    main()
