#!/usr/bin/env bash
# Split a data dir into N parts of about equal total duration: <data>/split<N>/<1..N>/.
# Reuses an existing split while the data dir's tables are unchanged.
set -euo pipefail
help_message="Usage: $0 <data-dir> <num-jobs>"
. "$(dirname "$0")/parse_options.sh"
if [ $# -ne 2 ]; then printf '%s\n' "$help_message" >&2; exit 1; fi
. "$(dirname "$0")/../path.sh"
python "$VOXADAPT_ROOT/pyscripts/split_data.py" "$1" "$2" > /dev/null
