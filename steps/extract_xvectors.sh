#!/usr/bin/env bash
# Stage 5 for one data dir, Kaldi-style: split it into --nj parts balanced by duration, embed each
# part in a job through --cmd (utils/run_local.sh, utils/run_slurm.sh; see cmd.sh), then merge the
# parts into one sorted xvector.scp with speaker means (spk_xvector.scp, num_utts.ark).
# Resumable: finished jobs are kept, and a complete output made with the same inputs is left alone.
# run.sh (stage 5) and local/evaluate.sh (stage 1) both extract through this script.
set -euo pipefail
nj=2
cmd="utils/run_local.sh"
config=""
set=()
help_message="Usage: $0 [options] <model-dir> <data-dir> <xvector-dir>
 e.g.: $0 --nj 4 --cmd \"\$extract_cmd\" --config conf/mhfa_tiny.yaml exp/mhfa_tiny/model data/test exp/mhfa_tiny/embeddings/test
  <model-dir>     a trained model (exp/<name>/model) or a package
  <data-dir>      a validated Kaldi data dir (wav.scp, utt2spk, reco2dur [, segments])
  <xvector-dir>   output: xvector.{ark,scp}, spk_xvector.{ark,scp}, num_utts.ark, log/
Options:
  --nj N            jobs (default: $nj)
  --cmd CMD         job launcher (default: $cmd)
  --config FILE     config whose extract section applies (required: the experiment's, or the package's config.yaml)
  --set KEY=VALUE   one config value (repeatable), e.g. --set extract.engine=onnx"
. "$(dirname "$0")/../utils/parse_options.sh"
[ $# -eq 3 ] || { printf '%s\n' "$help_message" >&2; exit 1; }
[ -n "$config" ] || { echo "ERROR: $0: give --config (the experiment's config, or the package's config.yaml)" >&2; exit 1; }
[[ "$nj" =~ ^[0-9]+$ ]] && [ "$nj" -ge 1 ] || { echo "ERROR: $0: --nj '$nj' must be a whole number of at least 1" >&2; exit 1; }
model_dir=$1 data_dir=$2 out=$3
. "$(dirname "$0")/../path.sh"
step=(python "$VOXADAPT_ROOT/pyscripts/extract_xvectors.py")
opts=(--config "$config")
for kv in ${set[@]+"${set[@]}"}; do opts+=(--set "$kv"); done
io=(--model "$model_dir" --data-dir "$data_dir" --out "$out" --nj "$nj")

# Prints the split dir and the jobs' log pattern, or nothing when the output is already complete.
mapfile -t plan < <("${step[@]}" split "${opts[@]}" "${io[@]}" && echo rc=0 || echo rc=1)  # errexit would skip an echo after a failure
[ "${plan[-1]}" = rc=0 ] || exit 1
[ "${#plan[@]}" -eq 3 ] || exit 0
# Local jobs share this machine's cores; more threads than cores makes every job crawl.
threads=$(( $(nproc) / nj )); [ "$threads" -ge 1 ] || threads=1
$cmd JOB=1:"$nj" "${plan[1]}" \
  "${step[@]}" job "${opts[@]}" --model "$model_dir" --split-dir "${plan[0]}" --out "$out" --job JOB --num-threads "$threads"
"${step[@]}" merge "${opts[@]}" "${io[@]}"
