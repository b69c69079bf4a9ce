#!/usr/bin/env bash
# Validate a Kaldi data dir: sorted unique tables, consistent wav.scp/utt2spk/spk2utt/segments,
# and audio that exists, decodes, is mono, long enough, not silent, at the expected sample rate.
# Large dirs (over 20,000 recordings or 2,000 pipes) get headers read and a sample decoded (--audio-check).
set -euo pipefail
no_audio=false
audio_check=auto
sample=1000
sample_rate=16000
min_duration=0.2
trials=""
nj=1
help_message="Usage: $0 [options] <data-dir>
  --no-audio true|false     check the tables only (default: $no_audio)
  --audio-check MODE        decode (every recording), header (headers + a decoded sample), or
                            auto (decode up to 20,000 recordings, 2,000 pipes) (default: $audio_check)
  --sample N                recordings decoded in full by the header check (default: $sample)
  --sample-rate N           expected sample rate (default: $sample_rate)
  --min-duration SEC        shortest allowed recording (default: $min_duration)
  --trials FILE             also check a trial list against the data dir
  --nj N                    parallel processes for the audio check (default: $nj)"
. "$(dirname "$0")/parse_options.sh"
if [ $# -ne 1 ]; then printf '%s\n' "$help_message" >&2; exit 1; fi
. "$(dirname "$0")/../path.sh"
# The dir is the caller's; wav.scp's relative paths are read from the recipe directory, as every
# stage reads them (Kaldi's convention: relative to the directory the recipe runs in).
dir=$(realpath -m -- "$1")
[ -z "$trials" ] || trials=$(realpath -m -- "$trials")
cd "$VOXADAPT_ROOT"
args=(--sample-rate "$sample_rate" --min-duration "$min_duration" --nj "$nj" --audio "$audio_check" --sample "$sample")
[ "$no_audio" = true ] && args+=(--audio none)
[ -n "$trials" ] && args+=(--trials "$trials")
exec python "$VOXADAPT_ROOT/pyscripts/validate_data_dir.py" "${args[@]}" "$dir"
