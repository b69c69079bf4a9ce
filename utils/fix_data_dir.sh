#!/usr/bin/env bash
# Sort a Kaldi data dir's tables, drop malformed/duplicate/inconsistent entries, regenerate spk2utt;
# with --drop-bad-audio true, also the recordings validation refuses (decoded: unreadable, another
# sample rate, not mono, too short, silent) and their utterances.
# Prints one line per reason; refuses (exit 1, nothing changed) when more than --allow-drop percent
# of the utterances would be dropped. Originals and the dropped list: <data-dir>/.backup/<n>/ (never
# overwritten).
set -euo pipefail
allow_drop=10
drop_bad_audio=false
sample_rate=16000
min_duration=0.2
nj=1
help_message="Usage: $0 [options] <data-dir>
  --allow-drop PERCENT        the largest share of utterances fixing may drop (default: $allow_drop)
  --drop-bad-audio true|false decode every recording; drop those with audio faults (default: $drop_bad_audio)
  --sample-rate N             expected sample rate, with --drop-bad-audio (default: $sample_rate)
  --min-duration SEC          shortest allowed recording, with --drop-bad-audio (default: $min_duration)
  --nj N                      parallel processes decoding the audio (default: $nj)"
. "$(dirname "$0")/parse_options.sh"
if [ $# -ne 1 ]; then printf '%s\n' "$help_message" >&2; exit 1; fi
. "$(dirname "$0")/../path.sh"
args=(--allow-drop "$allow_drop" --sample-rate "$sample_rate" --min-duration "$min_duration" --nj "$nj")
[ "$drop_bad_audio" = true ] && args+=(--drop-bad-audio)
exec python "$VOXADAPT_ROOT/pyscripts/fix_data_dir.py" "${args[@]}" "$1"
