#!/usr/bin/env bash
# Re-run the comparisons of RESULTS.md on the embedded corpus: every (config, seed) trains from
# scratch under exp/compare/ (stages 3-7; finished runs are skipped) and each table is printed and
# written to exp/compare/table_*.md. Run ./run.sh first: its data/ is shared and its model
# (exp/mhfa_tiny/model) is the teacher of the distillation run.
set -euo pipefail
seeds="1 2 3"
only=""
help_message="Usage: $0 [--seeds \"1 2 3\"] [--only pretraining|dropclass|dropadapt|systems]
  --seeds LIST   seeds of the multi-seed tables (default: $seeds)
  --only NAME    one table: pretraining (shipped vs random backbone), dropclass, dropadapt,
                 systems (frozen / full FT / adapters / LoRA / class token / + KD, seed 1)"
cd "$(dirname "$0")/.."
. utils/parse_options.sh
. ./path.sh
[ -f data/.done/stage2_augment.json ] || { echo "ERROR: data/ is not prepared; run ./run.sh --stop_stage 2 first" >&2; exit 1; }
want() { [ -z "$only" ] || [ "$only" = "$1" ]; }
# shellcheck disable=SC2086  # the seed list is meant to split
if want pretraining; then
  python pyscripts/compare.py --seeds $seeds --reference mhfa_frozen_tiny \
    --configs conf/mhfa_frozen_tiny.yaml conf/mhfa_frozen_random_tiny.yaml
fi
if want dropclass; then
  python pyscripts/compare.py --seeds $seeds --reference mhfa_frozen_tiny \
    --configs conf/mhfa_frozen_tiny.yaml conf/mhfa_dropclass_tiny.yaml
fi
if want dropadapt; then
  python pyscripts/compare.py --seeds $seeds --reference dropadapt_none_tiny --stage3-from mhfa_frozen_tiny \
    --configs conf/mhfa_frozen_tiny.yaml conf/dropadapt_none_tiny.yaml conf/dropadapt_tiny.yaml \
    conf/dropadapt_random_tiny.yaml
fi
if want systems; then
  [ -f exp/mhfa_tiny/model/model.safetensors ] || { echo "ERROR: exp/mhfa_tiny/model (the KD teacher) is missing; run ./run.sh first" >&2; exit 1; }
  python pyscripts/compare.py --seeds 1 --reference mhfa_frozen_tiny \
    --configs conf/mhfa_frozen_tiny.yaml conf/mhfa_tiny.yaml conf/adapters_tiny.yaml conf/lora_tiny.yaml \
    conf/clstoken_tiny.yaml conf/clstoken_kd_tiny.yaml
fi
