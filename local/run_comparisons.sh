#!/usr/bin/env bash
# Re-run the comparisons of RESULTS.md on the embedded corpus: every (config, seed) trains from
# scratch under the comparison's exp dir (stages 3-7; finished runs are skipped) and each table
# (EER with 95 % speaker-bootstrap intervals on the clean and degraded lists, paired differences
# from the table's reference) is printed and written to <exp>/table_*.md.
#   --scale tiny: ./run.sh's data/ and exp/compare/; the distillation teacher is ./run.sh's model
#   --scale eval: conf/eval_synthetic.yaml (1,000 training and 5,000 test speakers) in data_eval/,
#                 exp/compare_eval/; the teacher is conf/eval_synthetic.yaml's model
# The data and the teacher are made (./run.sh) if missing.
set -euo pipefail
seeds="1 2 3"
only=""
scale=tiny
help_message="Usage: $0 [--scale tiny|eval] [--seeds \"1 2 3\"] [--only pretraining|dropclass|dropadapt|systems]
  --scale NAME   tiny: the default corpus (data/, exp/compare/); eval: the evaluation scale
                 (conf/eval_synthetic.yaml; data_eval/, exp/compare_eval/) (default: $scale)
  --seeds LIST   seeds of every table (default: $seeds)
  --only NAME    one table: pretraining (shipped vs random backbone, with the MFCC-statistics row),
                 dropclass, dropadapt, systems (frozen / full FT / adapters / LoRA / class token / + KD)"
cd "$(dirname "$0")/.."
. utils/parse_options.sh
# Options are checked before anything runs: a typo must not train for hours, or run nothing and succeed.
die() { echo "ERROR: $0: $*" >&2; exit 1; }
[ $# -eq 0 ] || die "unexpected argument '$1' (see $0 --help)"
case "$scale" in tiny|eval) ;; *) die "--scale '$scale' is not tiny or eval" ;; esac
case "$only" in
  ""|pretraining|dropclass|dropadapt|systems) ;;
  *) die "--only '$only' is not one of pretraining, dropclass, dropadapt, systems" ;;
esac
[[ "$seeds" =~ ^[0-9]+( [0-9]+)*$ ]] || die "--seeds '$seeds' is not a list of whole numbers; give e.g. --seeds \"1 2 3\""
. ./path.sh
case "$scale" in
  # DropClass and DropAdapt drop a share of the classes: their configs differ with the class count.
  tiny) data=data; exp=exp/compare; overlay=(); base=conf/mhfa_tiny.yaml
        dropclass=conf/mhfa_dropclass_tiny.yaml; dropadapt=conf/dropadapt_tiny.yaml; random_drop=conf/dropadapt_random_tiny.yaml ;;
  eval) data=data_eval; exp=exp/compare_eval; overlay=(--overlay conf/eval_synthetic.yaml); base=conf/eval_synthetic.yaml
        dropclass=conf/mhfa_dropclass_eval.yaml; dropadapt=conf/dropadapt_eval.yaml; random_drop=conf/dropadapt_random_eval.yaml ;;
esac
./run.sh --config "$base" --data "$data" --stop_stage 2  # nothing to do once prepared
# The base config's trained model ($model_dir; voxadapt/layout.py owns the path) is the distillation teacher.
paths=$(python -m voxadapt.stages paths --config "$base" --data "$data")
eval "$paths"
teacher=$model_dir
want() { [ -z "$only" ] || [ "$only" = "$1" ]; }
compare() {
  # shellcheck disable=SC2086  # the seed list is meant to split
  python pyscripts/compare.py --seeds $seeds --data "$data" --exp "$exp" ${overlay[@]+"${overlay[@]}"} "$@"
}
if want pretraining; then
  # PLDA too: it learns its own projection from the labels, so it shows what the backbone's
  # features hold when the head trained on them does not.
  compare --reference mhfa_frozen_tiny --mfcc-reference --methods cosine asnorm plda \
    --configs conf/mhfa_frozen_tiny.yaml conf/mhfa_frozen_random_tiny.yaml
fi
if want dropclass; then
  compare --reference mhfa_frozen_tiny --configs conf/mhfa_frozen_tiny.yaml "$dropclass"
fi
if want dropadapt; then
  compare --reference dropadapt_none_tiny --stage3-from mhfa_frozen_tiny \
    --configs conf/mhfa_frozen_tiny.yaml conf/dropadapt_none_tiny.yaml "$dropadapt" "$random_drop"
  # Whether choosing the classes by the enrolment data beats dropping as many at random (same runs).
  compare --reference "$(basename "$random_drop" .yaml)" --stage3-from mhfa_frozen_tiny --configs "$random_drop" "$dropadapt"
fi
if want systems; then
  [ -e "$teacher" ] || ./run.sh --config "$base" --data "$data" --stage 3 --stop_stage 4
  # PLDA too: a head that has not converged can leave embeddings that cosine scoring cannot use
  # but a supervised projection can (the class token at the evaluation scale).
  compare --reference mhfa_tiny --teacher "$teacher" --mfcc-reference --methods cosine asnorm plda \
    --configs conf/mhfa_frozen_tiny.yaml conf/mhfa_tiny.yaml conf/adapters_tiny.yaml conf/lora_tiny.yaml \
    conf/clstoken_tiny.yaml conf/clstoken_kd_tiny.yaml
fi
