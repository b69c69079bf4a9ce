#!/usr/bin/env python3
"""The class token's test-time rules on one trained model, scored with cosine: each scored set's
utterances (and a subset of the training set, for the centring mean) go through the backbone once
and through the token transformer once per rule: the bank's mean (`bank_mean`) and each entry's
mean (`entry<k>`); and `entries_mean`, the mean of the entries' embeddings (measured, not a
pooling option: no better, and token_bank passes). Prints a markdown table of each rule's EER
against bank_mean (95 % speaker-bootstrap intervals, paired differences), as pyscripts/compare.py
does, and saves each scored set's embeddings per rule in <out>/<set>.npz.

    python local/clstoken_rules.py --src exp/compare/clstoken_tiny_s1 --out exp/rules --data data

Cheaper than stages 5-7 per rule (one backbone pass for all rules), but the centring mean comes
from --train-utts training utterances, not all: the figures are for ranking the rules, the bank_mean
row checks them against stage 7's cosine EER of the same model.
"""

from pathlib import Path

from voxadapt.pyscript import make_parser, run_main


def main(argv):
    parser = make_parser(__doc__)
    parser.add_argument("--src", type=Path, required=True, help="a trained class-token experiment (exp/<name>)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--train-utts", type=int, default=300, help="training utterances for the centring mean")
    args = parser.parse_args(argv)
    import numpy as np
    import torch

    from voxadapt.backend.scoring import Backend, Embeddings
    from voxadapt.backend.trial_list import score_list
    from voxadapt.data.audio import read_utterance
    from voxadapt.data.kaldi_dir import DataDir
    from voxadapt.embed import embed_waveforms
    from voxadapt.layout import DataLayout, trial_lists
    from voxadapt.metrics import min_dcf
    from voxadapt.models.loading import load_speaker_model
    from voxadapt.report.comparison import System, TrialList, markdown

    loaded = load_speaker_model(args.src / "model")
    model, cfg = loaded.model, loaded.cfg
    pooling = model.pooling
    rules = [("bank_mean", 0)] + [("entry", k) for k in range(cfg.model.pooling.token_bank)]
    names = ["bank_mean"] + [f"entry{k}" for k in range(cfg.model.pooling.token_bank)]

    def every_rule(wav: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        states, mask = model.features(wav, lengths)
        out = []
        for rule, entry in rules:
            pooling.token_eval, pooling.token_eval_entry = rule, entry
            out.append(pooling(states, mask))
        return torch.cat(out, 1)

    def embed(set_name: str, every: int = 1) -> tuple[list[str], np.ndarray]:
        part = DataDir.load(args.data / set_name)
        utts = sorted(part.utterance_ids)[::every]
        durations = part.utt2dur()
        utts.sort(key=lambda u: (durations[u], u))
        table = np.concatenate([embed_waveforms(every_rule, [read_utterance(part, u)], cfg.data.sample_rate, cfg.extract)
                                for u in utts])
        print(f"{set_name}: {len(utts)} utterances", flush=True)
        return utts, table

    dim = cfg.model.pooling.embed_dim
    train = cfg.data.sets.train
    _, train_table = embed(train, max(1, len(DataDir.load(args.data / train).utterance_ids) // args.train_utts))
    data = DataLayout(args.data.resolve())
    lists = []  # (set, trial list file, trial list) for every scored list
    for s in cfg.data.sets.scored:
        utt2spk = DataDir.load(data.set_dir(s)).utt2spk
        lists += [(s, path, TrialList.load(name, path, utt2spk)) for name, path in trial_lists(data.set_dir(s)).items()]
    embedded = {s: embed(s) for s in cfg.data.sets.scored}
    args.out.mkdir(parents=True, exist_ok=True)
    systems = {n: System(n) for n in names + ["entries_mean"]}

    def split(table: np.ndarray) -> dict[str, np.ndarray]:
        per = {n: table[:, r * dim:(r + 1) * dim] for r, n in enumerate(names)}
        per["entries_mean"] = np.mean([per[n] for n in names[1:]], axis=0)
        return per

    means = {n: v.mean(0) for n, v in split(train_table).items()}
    for set_name, path, tl in lists:
        utts, table = embedded[set_name]
        for n, v in split(table).items():
            scored = score_list(path, Embeddings(utts, v), Backend(means[n]), ["cosine"], cfg.scoring.asnorm_top_n)
            systems[n].scores[(tl.name, "cosine")] = [scored.scores["cosine"]]
            systems[n].min_dcf[(tl.name, "cosine")] = [min_dcf(scored.scores["cosine"], tl.labels, 0.01)[0]]
    for s in cfg.data.sets.scored:
        np.savez(args.out / f"{s}.npz", utts=np.array(embedded[s][0]), **split(embedded[s][1]))
    table = markdown(list(systems.values()), [tl for _, _, tl in lists], "cosine", "bank_mean")
    (args.out / f"table_{args.src.name}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    run_main(main)
