"""The `voxadapt` command: embed, verify, score and export with a packaged model.

    voxadapt embed MODEL a.wav dir/ ...            (files, or every .wav/.flac/.ogg under a dir; Kaldi text on stdout)
    voxadapt embed MODEL --list files.txt --out ark,scp:x.ark,x.scp
    voxadapt embed MODEL --wav-scp wav.scp --out ark,scp:x.ark,x.scp   (paths or 'cmd |' pipes)
    voxadapt verify MODEL a.wav b.wav [--json] [--exit-code]   (score, LLR, accept/reject)
    voxadapt score MODEL --trials trials --scp xvector.scp [--out scores] [--utt2dur F] [--cohort-scp F] [--json]
                   [--enroll-map enroll.map | --enroll-scp spk_xvector.scp --num-utts num_utts.ark]
    voxadapt export-onnx MODEL model.onnx

verify --exit-code: 0 accept, 3 reject (1: a user error, 2: a usage or internal error).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from voxadapt.pyscript import ArgumentParser, run_main

REJECTED = 3  # verify --exit-code: 1 and 2 already mean a user error and a usage/internal error
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
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


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="voxadapt", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="full tracebacks instead of one-line errors")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser, audio: bool = True) -> None:
        sp.add_argument("model", help="packaged model directory (exp/<name>/package)")
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
    s.add_argument("--utt2dur", help="Kaldi utt2dur of the utterances: LLRs from the duration-aware or QMF calibration")
    s.add_argument("--cohort-scp", help="AS-norm cohort x-vectors (default: the package's training speakers)")
    s.add_argument("--json", action="store_true", help="print a JSON summary (needs --out for the scores)")
    x = sub.add_parser("export-onnx", help="waveform -> embedding as ONNX")
    x.add_argument("model")
    x.add_argument("out")
    x.add_argument("--int8", action="store_true", help="int8 matrix multiplies (onnxruntime dynamic quantisation)")
    return p


def cli(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    from voxadapt.api import SpeakerVerifier

    if args.command == "export-onnx":
        from pathlib import Path

        from voxadapt.errors import VoxadaptError
        from voxadapt.onnx_export import export_int8, export_onnx

        out = Path(args.out)
        if out.is_dir():
            raise VoxadaptError(f"{out}: is a directory; give the file to write, e.g. {out / 'model.onnx'}")
        if not out.parent.is_dir():
            raise VoxadaptError(f"{out.parent}: directory not found; create it first")
        v = SpeakerVerifier(args.model)
        if args.int8:
            cosine = export_int8(v.model, out, v.sample_rate, v.cfg.extract.level_dbfs)
            print(f"{args.out}: waveform (1, samples) at {v.sample_rate} Hz -> embedding, int8 matrix multiplies; "
                  f"int8 vs fp32 cosine {cosine:.6f} on a noise probe (check it on your own audio)")
            return 0
        cosine = export_onnx(v.model, out, v.sample_rate, v.cfg.extract.level_dbfs)
        print(f"{args.out}: waveform (1, samples) at {v.sample_rate} Hz -> embedding; ONNX vs PyTorch cosine {cosine:.6f}")
        return 0
    v = SpeakerVerifier(args.model, args.device, args.method, getattr(args, "batch_size", 200.0),
                        getattr(args, "vad", None))
    if args.command == "embed":
        return _embed(v, args)
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


def _embed(v, args) -> int:  # noqa: ANN001
    import contextlib

    import kaldiio
    import torch
    from tqdm import tqdm

    from voxadapt.embed import probe_waveforms
    from voxadapt.layout import PackageLayout
    from voxadapt.onnx_export import extraction_engine

    items = _embed_items(args)
    graph = PackageLayout(v.path).onnx
    probes = []
    if args.engine == "onnx-int8":  # the int8 graph is checked on the first inputs
        probes = probe_waveforms([v._waveform(path, args.channel, args.allow_upsample) for _, path in items[:3]],
                                 v.sample_rate, v.cfg.extract)
    v.model = extraction_engine(v.model, v.device, args.engine, v.sample_rate, torch.get_num_threads(),
                                graph if graph.is_file() else None, probes)
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(kaldiio.WriteHelper(args.out)) if args.out else None
        bar = stack.enter_context(tqdm(total=len(items), desc="embedding", unit="file", disable=len(items) < EMBED_CHUNK,
                                       file=sys.stderr))
        for start in range(0, len(items), EMBED_CHUNK):
            chunk = items[start:start + EMBED_CHUNK]
            vectors = v.embed_many([path for _, path in chunk], args.channel, args.allow_upsample)
            for (key, _), vec in zip(chunk, vectors):
                if writer is not None:
                    writer(key, vec)
                else:
                    print(f"{key}  [ {' '.join(f'{x:.6g}' for x in vec)} ]")
            bar.update(len(chunk))
    return 0


def _score(v, args) -> int:  # noqa: ANN001
    import json
    from pathlib import Path

    from voxadapt.backend.enrollment import enrolment_side
    from voxadapt.backend.scoring import Embeddings, write_scores
    from voxadapt.backend.trial_list import score_list, with_cohort
    from voxadapt.data.kaldi_dir import read_table
    from voxadapt.errors import DataError, VoxadaptError, located

    if args.json and not args.out:
        raise VoxadaptError("--json prints a summary on stdout; give --out for the scores")
    durations = None
    if args.utt2dur:
        try:
            durations = {k: float(line.value) for k, line in read_table(Path(args.utt2dur), check_order=False).items()}
        except ValueError:
            raise DataError(located(args.utt2dur, None, "durations must be numbers of seconds",
                                    "make it with Kaldi's utils/data/get_utt2dur.sh")) from None
    emb = Embeddings.from_scp(args.scp)
    enrolment = enrolment_side(emb, args.enroll_scp, args.enroll_map, args.num_utts)
    scored = score_list(args.trials, emb, with_cohort(v.backend, args.cohort_scp), [v.method], v.manifest["asnorm_top_n"],
                        enrolment, {v.method: v.calibrations[v.method]}, durations, args.utt2dur, p_targets=[0.01, 0.05])
    scores, llr = scored.scores[v.method], scored.llrs[v.method]
    write_scores(args.out or None, scored.trials, scores, llr)
    summary: dict = {"trials": len(scored.trials), "method": v.method, "scores": args.out, "llr": llr is not None,
                     **scored.metrics.get(v.method, {})}
    if args.json:
        print(json.dumps(summary))
    elif "eer" in summary:
        print(f"EER {100 * summary['eer']:.2f}% over {len(scored.trials)} trials ({v.method})"
              + ("" if llr is not None else "; no LLRs: this calibration needs durations (--utt2dur)"), file=sys.stderr)
    return 0


def main() -> None:
    run_main(cli)


if __name__ == "__main__":
    main()
