#!/usr/bin/env bash
# Pre-train the small SSL model that the tiny configs fine-tune (models/tiny_wavlm by default).
# Not part of ./run.sh: the result is shipped in the repository. Resumes after a kill.
set -euo pipefail
config=conf/pretrain_tiny.yaml
work=exp/pretrain_tiny
nj=2
help_message="Usage: $0 [--config FILE] [--work DIR] [--nj N]
  --config FILE   pre-training config (default: $config; the output dir is its pretrain.out_dir)
  --work DIR      corpus, k-means targets and checkpoints (default: $work)
  --nj N          processes for rendering the unlabeled corpus (default: $nj)"
cd "$(dirname "$0")/.."
. utils/parse_options.sh
. ./path.sh
python pyscripts/pretrain_ssl.py --config "$config" --work "$work" --nj "$nj"
