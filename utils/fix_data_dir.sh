#!/usr/bin/env bash
# Sort a Kaldi data dir's tables, drop malformed/duplicate/inconsistent entries, regenerate spk2utt.
# Reports each dropped entry; the originals are kept in <data-dir>/.backup/.
set -euo pipefail
help_message="Usage: $0 <data-dir>"
. "$(dirname "$0")/parse_options.sh"
if [ $# -ne 1 ]; then printf '%s\n' "$help_message" >&2; exit 1; fi
. "$(dirname "$0")/../path.sh"
exec python "$VOXADAPT_ROOT/pyscripts/fix_data_dir.py" "$1"
