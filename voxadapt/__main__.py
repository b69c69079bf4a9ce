"""The `voxadapt` command: embed, verify, score and export with a packaged model.

    voxadapt embed MODEL a.wav b.wav               (Kaldi text vectors on stdout)
    voxadapt embed MODEL --wav-scp wav.scp --out ark,scp:x.ark,x.scp
    voxadapt verify MODEL a.wav b.wav              (score, LLR, accept/reject at the packaged threshold)
    voxadapt score MODEL --trials trials --scp xvector.scp [--out scores]
    voxadapt export-onnx MODEL model.onnx
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from voxadapt.cli import ArgumentParser, run_main


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

    e = sub.add_parser("embed", help="embeddings of audio files")
    common(e)
    e.add_argument("wavs", nargs="*", help="audio files (ids are the paths)")
    e.add_argument("--wav-scp", help="Kaldi wav.scp of plain paths instead")
    e.add_argument("--out", type=_wspecifier, help="Kaldi wspecifier, e.g. ark,scp:x.ark,x.scp (default: text on stdout)")
    v = sub.add_parser("verify", help="do two recordings come from the same speaker?")
    common(v)
    v.add_argument("a")
    v.add_argument("b")
    v.add_argument("--p-target", type=_probability, default=0.01, help="prior of a target trial for the decision")
    s = sub.add_parser("score", help="score a trial list from x-vectors made with this model")
    common(s, audio=False)
    s.add_argument("--trials", required=True)
    s.add_argument("--scp", required=True)
    s.add_argument("--out", help="score file (default: stdout)")
    x = sub.add_parser("export-onnx", help="waveform -> embedding as ONNX")
    x.add_argument("model")
    x.add_argument("out")
    return p


def cli(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    from voxadapt.api import SpeakerVerifier

    if args.command == "export-onnx":
        from pathlib import Path

        from voxadapt.errors import VoxadaptError
        from voxadapt.onnx_export import export_onnx

        out = Path(args.out)
        if out.is_dir():
            raise VoxadaptError(f"{out}: is a directory; give the file to write, e.g. {out / 'model.onnx'}")
        if not out.parent.is_dir():
            raise VoxadaptError(f"{out.parent}: directory not found; create it first")
        v = SpeakerVerifier(args.model)
        cosine = export_onnx(v.model, Path(args.out), v.sample_rate)
        print(f"{args.out}: waveform (1, samples) at {v.sample_rate} Hz -> embedding; ONNX vs PyTorch cosine {cosine:.6f}")
        return 0
    v = SpeakerVerifier(args.model, args.device, args.method, getattr(args, "batch_size", 200.0))
    if args.command == "embed":
        return _embed(v, args)
    if args.command == "verify":
        r = v.verify(args.a, args.b, args.p_target, args.channel, args.allow_upsample)
        print(f"score {r.score:.4f} ({r.method})  llr {r.llr:.3f}  threshold {r.threshold:.3f} (p_target {r.p_target})"
              f"  -> {'accept: same speaker' if r.accept else 'reject: different speakers'}")
        return 0
    return _score(v, args)


def _embed(v, args) -> int:  # noqa: ANN001
    import kaldiio

    from voxadapt.errors import VoxadaptError

    if args.wav_scp and args.wavs:
        raise VoxadaptError("give audio files or --wav-scp, not both")
    if args.wav_scp:
        from pathlib import Path

        from voxadapt.data.kaldi_dir import read_table

        items = [(k, line.value) for k, line in read_table(Path(args.wav_scp), check_order=False).items()]
    else:
        items = [(w, w) for w in args.wavs]
    if not items:
        raise VoxadaptError("nothing to embed: give audio files or --wav-scp")
    vectors = v.embed_many([path for _, path in items], args.channel, args.allow_upsample)
    if args.out:
        with kaldiio.WriteHelper(args.out) as writer:
            for (key, _), vec in zip(items, vectors):
                writer(key, vec)
    else:
        for (key, _), vec in zip(items, vectors):
            print(f"{key}  [ {' '.join(f'{x:.6g}' for x in vec)} ]")
    return 0


def _score(v, args) -> int:  # noqa: ANN001
    import numpy as np

    from voxadapt.backend.scoring import Embeddings, score_trials
    from voxadapt.data.trials import read_trials
    from voxadapt.metrics import eer

    trials = read_trials(args.trials)
    scores = score_trials(v.backend, Embeddings.from_scp(args.scp), trials, [v.method], v.manifest["asnorm_top_n"],
                          args.trials)[v.method]
    cal = v.calibrations[v.method]
    llr = cal.llr(scores) if not cal.quality else None
    lines = (f"{t.enroll} {t.test} {s:.6f}" + (f" {llr[i]:.4f}" if llr is not None else "") + "\n"
             for i, (t, s) in enumerate(zip(trials, scores)))
    if args.out:
        from voxadapt.fileio import atomic_path

        with atomic_path(args.out) as tmp, open(tmp, "w") as f:
            f.writelines(lines)
    else:
        sys.stdout.writelines(lines)
    labels = np.array([t.target for t in trials])
    if labels.any() and not labels.all():
        print(f"EER {100 * eer(scores, labels)[0]:.2f}% over {len(trials)} trials ({v.method})", file=sys.stderr)
    return 0


def main() -> None:
    run_main(cli)


if __name__ == "__main__":
    main()
