#!/usr/bin/env bash
# Run a command on this machine, Kaldi run.pl-style:
#   utils/run_local.sh [options] [JOB=1:N] <log-file> <command> [args...]
# With JOB=1:N the command runs N times with every "JOB" in the log name and the command replaced
# by the job's number; each job writes its own log. Exits non-zero if any job fails, naming the
# log of the first failure.
set -euo pipefail
max_jobs_run=$(nproc 2> /dev/null || echo 4)
tee=false
help_message="Usage: $0 [options] [JOB=1:N] <log-file> <command> [args...]
  --max-jobs-run N   at most N jobs at a time (default: $max_jobs_run)
  --tee true|false   also copy a single job's output to stdout (default: $tee)
Accepted for compatibility with Kaldi's launchers and ignored: --gpu, --mem, --num-threads, --time"
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) printf '%s\n' "$help_message"; exit 0 ;;
    --max-jobs-run) max_jobs_run=$2; shift 2 ;;
    --tee) tee=$2; shift 2 ;;
    --gpu|--mem|--num-threads|--time|--config) shift 2 ;;
    --*) echo "$0: unknown option '$1'" >&2; exit 1 ;;
    *) break ;;
  esac
done
jobvar="" first=1 last=1
if [[ $# -gt 0 && "$1" =~ ^([A-Za-z_][A-Za-z0-9_]*)=([0-9]+):([0-9]+)$ ]]; then
  jobvar=${BASH_REMATCH[1]} first=${BASH_REMATCH[2]} last=${BASH_REMATCH[3]}
  shift
  if [ "$first" -gt "$last" ]; then echo "$0: empty job range $first:$last" >&2; exit 1; fi
fi
if [ $# -lt 2 ]; then printf '%s\n' "$help_message" >&2; exit 1; fi
log=$1
shift
cmd=""
for arg in "$@"; do cmd+="$(printf '%q' "$arg") "; done

run_one() {  # job-number
  local n=$1 this_log=$log this_cmd=$cmd
  if [ -n "$jobvar" ]; then this_log=${log//$jobvar/$n}; this_cmd=${cmd//$jobvar/$n}; fi
  mkdir -p "$(dirname "$this_log")"
  {
    echo "# $this_cmd"
    echo "# Started at $(date)"
  } > "$this_log"
  local start=$SECONDS rc=0
  if [ "$tee" = true ] && [ "$first" = "$last" ]; then
    bash -c "$this_cmd" 2>&1 | tee -a "$this_log" || rc=${PIPESTATUS[0]}
  else
    bash -c "$this_cmd" >> "$this_log" 2>&1 || rc=$?
  fi
  echo "# Accounting: time=$((SECONDS - start)) threads=1" >> "$this_log"
  echo "# Ended (code $rc) at $(date)" >> "$this_log"
  return "$rc"
}

declare -A pid_of=()
failed=()
for ((n = first; n <= last; n++)); do
  while [ "$(jobs -rp | wc -l)" -ge "$max_jobs_run" ]; do wait -n || true; done
  run_one "$n" &
  pid_of[$n]=$!
done
for ((n = first; n <= last; n++)); do
  wait "${pid_of[$n]}" || failed+=("$n")
done
if [ ${#failed[@]} -gt 0 ]; then
  bad_log=$log
  [ -n "$jobvar" ] && bad_log=${log//$jobvar/${failed[0]}}
  echo "$0: ${#failed[@]} / $((last - first + 1)) failed, log is in $bad_log" >&2
  tail -n 3 "$bad_log" | grep -E "^ERROR:" >&2 || true
  exit 1
fi
