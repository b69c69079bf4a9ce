#!/usr/bin/env bash
# Run a command on a Slurm cluster with Kaldi's launcher convention:
#   utils/run_slurm.sh [options] [JOB=1:N] <log-file> <command> [args...]
# JOB=1:N becomes one job array; every "JOB" in the log name and the command is replaced by the
# task's number. Waits for the jobs (sbatch --wait); exits non-zero if any failed, naming its log.
set -euo pipefail
config=conf/slurm.conf
gpu=0
num_threads=1
max_jobs_run=""
mem=""
time=""
help_message="Usage: $0 [options] [JOB=1:N] <log-file> <command> [args...]
  --config FILE        partition, mem, time, extra sbatch args (default: $config)
  --gpu N              GPUs per job (--gres=gpu:N) (default: $gpu)
  --num-threads N      CPUs per job (--cpus-per-task) (default: $num_threads)
  --mem SIZE --time T  override the config's memory and time limits
  --max-jobs-run N     at most N array tasks at once"
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) printf '%s\n' "$help_message"; exit 0 ;;
    --config) config=$2; shift 2 ;;
    --gpu) gpu=$2; shift 2 ;;
    --num-threads) num_threads=$2; shift 2 ;;
    --max-jobs-run) max_jobs_run=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --time) time=$2; shift 2 ;;
    --*) echo "$0: unknown option '$1'" >&2; exit 1 ;;
    *) break ;;
  esac
done
if [ ! -f "$config" ]; then echo "$0: $config: no such file; copy conf/slurm.conf and edit it" >&2; exit 1; fi
cli_mem=$mem cli_time=$time
partition="" extra_args=""
# shellcheck disable=SC1090
. "$config"
mem=${cli_mem:-$mem} time=${cli_time:-$time}
command -v sbatch > /dev/null || { echo "$0: sbatch not found: is this a Slurm login node?" >&2; exit 1; }

jobvar="" first=1 last=1
if [[ $# -gt 0 && "$1" =~ ^([A-Za-z_][A-Za-z0-9_]*)=([0-9]+):([0-9]+)$ ]]; then
  jobvar=${BASH_REMATCH[1]} first=${BASH_REMATCH[2]} last=${BASH_REMATCH[3]}
  shift
fi
if [ $# -lt 2 ]; then printf '%s\n' "$help_message" >&2; exit 1; fi
log=$1
shift
cmd=""
for arg in "$@"; do cmd+="$(printf '%q' "$arg") "; done

logdir=$(dirname "$log")
qdir="$logdir/q"
mkdir -p "$qdir"
name=$(basename "$log" .log)
[ -n "$jobvar" ] && name=${name//$jobvar/array}
script="$qdir/$name.sh"
rm -f "$qdir/$name".rc.*
n_expr='${SLURM_ARRAY_TASK_ID:-1}'
{
  echo "#!/usr/bin/env bash"
  echo "cd $(printf '%q' "$PWD")"
  echo "n=$n_expr"
  if [ -n "$jobvar" ]; then
    echo "log=$(printf '%q' "$log"); log=\${log//$jobvar/\$n}"
    echo "cmd=$(printf '%q' "$cmd"); cmd=\${cmd//$jobvar/\$n}"
  else
    echo "log=$(printf '%q' "$log")"
    echo "cmd=$(printf '%q' "$cmd")"
  fi
  echo 'mkdir -p "$(dirname "$log")"'
  echo '{ echo "# $cmd"; echo "# Started at $(date) on $(hostname), Slurm job ${SLURM_JOB_ID:-?}"; } > "$log"'
  echo 'start=$SECONDS; rc=0'
  echo 'bash -c "$cmd" >> "$log" 2>&1 || rc=$?'
  echo 'echo "# Accounting: time=$((SECONDS - start))" >> "$log"'
  echo 'echo "# Ended (code $rc) at $(date)" >> "$log"'
  echo "echo \$rc > $(printf '%q' "$qdir/$name").rc.\$n"
  echo 'exit $rc'
} > "$script"
chmod +x "$script"

opts=(--wait --parsable --job-name "$name" --output "$qdir/$name.%a.slurm.out" --cpus-per-task "$num_threads")
[ -n "$partition" ] && opts+=(--partition "$partition")
[ -n "$mem" ] && opts+=(--mem "$mem")
[ -n "$time" ] && opts+=(--time "$time")
[ "$gpu" -gt 0 ] && opts+=(--gres "gpu:$gpu")
array="$first-$last"
[ -n "$max_jobs_run" ] && array+="%$max_jobs_run"
opts+=(--array "$array")
# shellcheck disable=SC2086
sbatch "${opts[@]}" $extra_args "$script" > "$qdir/$name.jobid" || true

failed=()
for ((n = first; n <= last; n++)); do
  rc_file="$qdir/$name.rc.$n"
  if [ ! -f "$rc_file" ] || [ "$(cat "$rc_file")" != 0 ]; then failed+=("$n"); fi
done
if [ ${#failed[@]} -gt 0 ]; then
  bad_log=$log
  [ -n "$jobvar" ] && bad_log=${log//$jobvar/${failed[0]}}
  echo "$0: ${#failed[@]} / $((last - first + 1)) failed (Slurm job $(cat "$qdir/$name.jobid" 2> /dev/null || echo '?')), log is in $bad_log" >&2
  exit 1
fi
