#!/usr/bin/env python3
"""Why AS-norm and PLDA behave as they do on an experiment's x-vectors: re-scores the test set's
trial lists (clean and degraded) with variants of the AS-norm cohort and top-N and of the LDA
dimension before PLDA, each against plain cosine on the same speaker-bootstrap draws. Stages 5-6
of the experiment must have run; nothing of it is changed (the table is printed).

    . ./path.sh; python local/backend_study.py --data data --exp exp/mhfa_tiny
"""

from pathlib import Path

from voxadapt.pyscript import make_parser, run_main


def main(argv):
    parser = make_parser(__doc__)
    parser.add_argument("--data", default="data")
    parser.add_argument("--exp", required=True, help="experiment dir (exp/<name>)")
    parser.add_argument("--draws", type=int, default=1000)
    args = parser.parse_args(argv)
    import dataclasses

    import numpy as np

    from voxadapt.backend.scoring import Backend, Embeddings, asnorm_stats, score_trials
    from voxadapt.backend.training import train_backend
    from voxadapt.config import load_config
    from voxadapt.data.kaldi_dir import DataDir
    from voxadapt.data.trials import read_trials
    from voxadapt.layout import ExpLayout, trial_lists
    from voxadapt.report.bootstrap import difference_interval, metric_interval

    exp_dir = Path(args.exp)
    cfg = load_config(exp_dir / "config.yaml")
    exp, data = ExpLayout.of(exp_dir.parent, exp_dir.name), Path(args.data)
    sets = cfg.data.sets
    train = Embeddings.from_scp(exp.xvector_scp(sets.train))
    utt2spk = DataDir.load(data / sets.train).utt2spk
    backend = Backend.load(exp.backend)
    n_speakers = len(set(utt2spk.values()))

    # Cohorts: stage 6's (the training speakers' mean x-vectors), the training utterances
    # themselves, and the held-out dev speakers' utterances (never fitted by the head).
    cohorts = {"training speaker means": backend.cohort, "training utterances": train.matrix}
    if sets.dev:
        cohorts["dev utterances (unseen speakers)"] = Embeddings.from_scp(exp.xvector_scp(sets.dev)).matrix
    variants: list[tuple[str, str, Backend, int]] = [("cosine", "cosine", backend, 0)]
    for name, cohort in cohorts.items():
        for top in sorted({10, 50, 200, len(cohort)}):
            if top <= len(cohort):
                label = f"AS-norm, {name} ({len(cohort)}), top {'all' if top == len(cohort) else top}"
                variants.append((label, "asnorm", dataclasses.replace(backend, cohort=cohort), top))
    for dim in sorted({16, 32, 64, cfg.scoring.lda_dim}):
        plda_backend, _ = train_backend(train, utt2spk, dataclasses.replace(cfg.scoring, lda_dim=dim))
        kept = plda_backend.lda.shape[0]
        variants.append((f"PLDA, LDA to {kept} (of {n_speakers} speakers)", "plda", plda_backend, 0))

    for s in sets.scored:
        emb = Embeddings.from_scp(exp.xvector_scp(s))
        spk = DataDir.load(data / s).utt2spk
        for list_name, path in trial_lists(data / s).items():
            trials = read_trials(path)
            labels = np.array([t.target for t in trials])
            se, st = np.array([spk[t.enroll] for t in trials]), np.array([spk[t.test] for t in trials])
            print(f"\n{list_name}: {len(trials):,} trials, {len(set(se) | set(st))} speakers\n")
            print("| scoring | EER % (95 % interval) | EER - cosine EER, points (95 % paired interval) |")
            print("|---|---|---|")
            cos = None  # the first variant's scores: plain cosine
            for label, method, b, top in variants:
                scores = score_trials(b, emb, trials, [method], top or 1, path)[method]
                cos = scores if cos is None else cos
                ci = metric_interval("eer", [scores], labels, se, st, args.draws)
                d = difference_interval("eer", [cos], [scores], labels, se, st, args.draws)
                diff = "-" if label == "cosine" else (f"{100 * d.value:+.2f} ({100 * d.low:+.2f} to {100 * d.high:+.2f})"
                                                      + (" *" if d.excludes_zero else ""))
                print(f"| {label} | {100 * ci.value:.2f} ({100 * ci.low:.2f}-{100 * ci.high:.2f}) | {diff} |")
            # What AS-norm corrects: how much an utterance's mean non-target score moves from one
            # utterance to the next, and whether the cohort statistic follows it.
            ids = sorted({u for t in trials for u in (t.enroll, t.test)})
            pos = {u: i for i, u in enumerate(ids)}
            sums, counts = np.zeros(len(ids)), np.zeros(len(ids))
            for t, c in zip(trials, cos):
                if not t.target:
                    for u in (t.enroll, t.test):
                        sums[pos[u]] += c
                        counts[pos[u]] += 1
            seen = counts > 0
            impostor_mean = sums[seen] / counts[seen]
            x = backend.cosine_space(emb.subset([u for u, k in zip(ids, seen) if k]).matrix)
            gap = cos[labels].mean() - cos[~labels].mean()
            print(f"\nper-utterance mean non-target cosine: sd {impostor_mean.std():.4f} "
                  f"({impostor_mean.std() / gap:.2f} of the target - non-target gap {gap:.3f})")
            for name, cohort in cohorts.items():
                for top in sorted({50, len(cohort)}):
                    mu, _ = asnorm_stats(x, backend.cosine_space(cohort), top)
                    r = np.corrcoef(mu, impostor_mean)[0, 1]
                    print(f"  correlation with the top-{'all' if top == len(cohort) else top} mean of the cohort of "
                          f"{name}: {r:.2f}")
    print("\n*: the interval excludes 0 (a difference the list can tell)")
    return 0


if __name__ == "__main__":
    run_main(main)
