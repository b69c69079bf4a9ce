#!/usr/bin/env bash
# Evaluate a trained experiment or a packaged model on your own Kaldi data dir and trial list,
# with the steps of stages 0, 5 and 7; the recipe's data/ is never touched.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

stage=0
stop_stage=2
model=""        # exp/<name> (a trained experiment) or a package directory (exp/<name>/package)
data_dir=""     # your Kaldi data dir: wav.scp (paths or 'cmd |' pipes), utt2spk, optional segments
trials=""       # its trial list, Kaldi 'enroll test target|nontarget' or VoxCeleb '1|0 a.wav b.wav'
name=""         # the list's name in the results (default: the data dir's name)
out=""          # evaluation directory (default: <experiment>/eval/<name>, or <package>_eval/<name>)
nj=2            # extraction jobs, through $extract_cmd (cmd.sh)
cohort_scp=""   # AS-norm cohort x-vectors (default: the model's training-speaker means)

help_message="Usage: $0 --model EXP_OR_PACKAGE --data_dir DIR --trials FILE [options]
Stages (each resumable):
  0 data     validate DIR where it is (tables, every recording decoded) and the trials
             -> OUT/data/{wav.scp,utt2spk,spk2utt,segments,reco2dur,trials}
  1 extract  x-vectors in --nj jobs (\$extract_cmd JOB=1:N) -> OUT/embeddings/xvector.{ark,scp}
  2 score    the model's back-end and calibration -> OUT/scores/NAME/, OUT/results.json, OUT/RESULTS.md
Options:
  --model DIR        exp/<name> or a package (required)
  --data_dir DIR     your Kaldi data dir (required)
  --trials FILE      its trial list (required)
  --name NAME        name of the list in the results (default: the data dir's name)
  --out DIR          evaluation directory (default: <experiment>/eval/<name> for an experiment,
                     <package>_eval/<name> beside a package: one per model, never inside the package)
  --nj N             extraction jobs (default: $nj)
  --cohort_scp FILE  AS-norm cohort x-vectors from your domain (default: the model's training speakers)
  --stage N --stop_stage M   run stages N..M (default: $stage..$stop_stage)
Paths are relative to the directory you run this from."

. "$root/utils/parse_options.sh"
# Option paths are the caller's; the steps run in the recipe's directory (its path.sh, cmd.sh, utils/).
for opt in model data_dir trials out cohort_scp; do
  [ -z "${!opt}" ] || [[ "${!opt}" == /* ]] || printf -v "$opt" '%s' "$PWD/${!opt}"
done
cd "$root"
die() { echo "ERROR: $0: $*" >&2; exit 1; }
[ $# -eq 0 ] || die "unexpected argument '$1' (see $0 --help)"
[ -n "$model" ] && [ -n "$data_dir" ] && [ -n "$trials" ] || die "give --model, --data_dir and --trials (see $0 --help)"
[ -d "$model" ] || die "--model $model: not a directory; give exp/<name> or a package directory"
[ -d "$data_dir" ] || die "--data_dir $data_dir: not a directory; give your Kaldi data dir"
[ -f "$trials" ] || die "--trials $trials: file not found"
[ -z "$cohort_scp" ] || [ -f "$cohort_scp" ] || die "--cohort_scp $cohort_scp: file not found"
[[ "$nj" =~ ^[0-9]+$ ]] && [ "$nj" -ge 1 ] || die "--nj '$nj' must be a whole number of at least 1"
[[ "$stage" =~ ^[0-2]$ ]] && [[ "$stop_stage" =~ ^[0-2]$ ]] || die "--stage and --stop_stage must be 0, 1 or 2"
[ "$stage" -le "$stop_stage" ] || die "--stage $stage is after --stop_stage $stop_stage; nothing would run"
name="${name:-$(basename "$data_dir")}"
. ./path.sh
. ./cmd.sh
log() { echo "$(date '+%F %T') [evaluate.sh] $*"; }

# Experiment or package, Python decides (voxadapt/layout.py owns the paths): model_dir (what the
# extraction jobs load), config (their settings), out (default <experiment>/eval/<name>), out_lock,
# out_data, out_xvectors.
paths=$(python pyscripts/evaluate.py paths --model "$model" --name "$name" ${out:+--eval-dir "$out"})
eval "$paths"
# Two evaluations into one directory would overwrite each other's files: the second stops.
mkdir -p "$out"
. utils/lock.sh
lock_dir "$out_lock" ||
  die "another evaluation is using $out (it holds $out_lock); wait for it to end, or give this one another --out"

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  log "Stage 0: validating $data_dir and $trials -> $out_data"
  python pyscripts/evaluate.py prepare --model "$model" --data-dir "$data_dir" --trials "$trials" \
    --eval-dir "$out" --nj "$nj"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "Stage 1: x-vectors ($nj jobs; logs: $out_xvectors/log/)"
  steps/extract_xvectors.sh --nj "$nj" --cmd "$extract_cmd" --config "$config" "$model_dir" "$out_data" "$out_xvectors"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "Stage 2: scoring with the back-end of $model"
  python pyscripts/evaluate.py score --model "$model" --eval-dir "$out" --name "$name" \
    ${cohort_scp:+--cohort-scp "$cohort_scp"}
fi
log "Done (stages $stage..$stop_stage): $out"
