#!/usr/bin/env bash
# Sort a Kaldi data dir's tables, drop malformed/duplicate/inconsistent entries, regenerate spk2utt.
# Prints one line per reason; refuses (exit 1, nothing changed) when more than --allow-drop percent
# of the utterances would be dropped. Originals and the dropped list: <data-dir>/.backup/<n>/ (never
# overwritten).
set -euo pipefail
allow_drop=10
help_message="Usage: $0 [--allow-drop PERCENT] <data-dir>
  --allow-drop PERCENT   the largest share of utterances fixing may drop (default: $allow_drop)"
. "$(dirname "$0")/parse_options.sh"
if [ $# -ne 1 ]; then printf '%s\n' "$help_message" >&2; exit 1; fi
. "$(dirname "$0")/../path.sh"
exec python "$VOXADAPT_ROOT/pyscripts/fix_data_dir.py" --allow-drop "$allow_drop" "$1"
