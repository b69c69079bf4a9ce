#!/usr/bin/env bash
# voxadapt: speaker verification by fine-tuning self-supervised speech models (MHFA, adapters,
# DropClass/DropAdapt, class token + KD), Kaldi-style. Run ./run.sh --help for the stages.
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=8
config=conf/mhfa_tiny.yaml
corpus=""            # synthetic | voxceleb | kaldi (default: the config's data.corpus)
nj=2                 # parallel jobs for data preparation and extraction
data=data            # data root: data dirs, manifests, generated audio
exp=exp              # experiment root: exp/<name>/ per config
# VoxCeleb (--corpus voxceleb)
voxceleb1_root=""
voxceleb2_root=""
vox1_trials=""       # directory with veri_test2.txt, list_test_all2.txt, list_test_hard2.txt
vox2_convert_dir=""  # decode VoxCeleb2 .m4a once into FLAC here (default: decode through a pipe)
musan_root=""        # MUSAN for noise/music/babble (default: generated stand-ins)
rirs_root=""         # RIRS_NOISES for reverberation (default: generated room responses)
ssl_model=""         # local save_pretrained dir of the SSL model (default: the config's model.backbone.path)
# Your own Kaldi data dirs (--corpus kaldi)
train_dir=""
test_dir=""
trials=""
extract_sets=""      # stage 5: only these sets (space-separated; default: every set of the corpus)
binary=true          # stage 6: false writes mean.vec, lda.mat and plda in Kaldi's text forms
# Training scale-out (stage 3/4 run under torchrun)
nproc_per_node=1     # processes (GPUs) per node
nnodes=1
node_rank=0
master_addr=127.0.0.1
master_port=""   # empty: 29500 for several nodes; a free port on one node
set=()           # --set KEY=VALUE: one config value (repeatable)

help_message="Usage: $0 [options]
Stages:
  0 data       Kaldi data dirs data/<set>/{wav.scp,utt2spk,spk2utt,reco2dur} + trial lists
  1 manifests  lhotse manifests under data/manifests/<set>/
  2 augment    noise/music/babble/RIR resources (+ training audio in shards, with loader.shards)
  3 train      SSL fine-tuning with the configured back-end (torchrun)
  4 adapt      large-margin fine-tuning / DropAdapt, checkpoint averaging
  5 extract    x-vectors exp/<name>/embeddings/<set>/xvector.{ark,scp} (+ speaker means)
  6 backend    mean, LDA, PLDA (Kaldi format), AS-norm cohort
  7 score      cosine / AS-norm / S-norm / PLDA scores, EER, minDCF, actDCF, Cllr, RESULTS.md, DET plots
  8 package    exp/<name>/package: model + back-end + calibration (+ model.onnx) for the voxadapt command
Options:
  --stage N --stop_stage M     run stages N..M (default: $stage..$stop_stage)
  --config FILE                experiment config (default: $config)
  --corpus NAME                synthetic | voxceleb | kaldi (default: the config's)
  --nj N                       parallel jobs (default: $nj)
  --data DIR --exp DIR         output roots (default: $data, $exp)
  --voxceleb1_root DIR --voxceleb2_root DIR --vox1_trials DIR --vox2_convert_dir DIR
  --musan_root DIR --rirs_root DIR                (augmentation corpora; default: generated)
  --ssl_model DIR                                 (pre-trained WavLM/HuBERT/wav2vec2 directory)
  --train_dir DIR --test_dir DIR --trials FILE    (for --corpus kaldi)
  --extract_sets 'SET ...'                        (stage 5: these sets only; default: all)
  --binary true|false                             (stage 6: false writes Kaldi's text forms; default: $binary)
  --nproc_per_node N --nnodes N --node_rank R --master_addr H --master_port P   (torchrun, stages 3-4)
  --set KEY=VALUE                                 (one config value, repeatable; e.g. --set loader.batch_size=1024)
Every stage is resumable: re-running a finished stage does nothing.
A trained model on new data (your Kaldi dir and trial list): local/evaluate.sh --model exp/<name> ..."

. utils/parse_options.sh
if [ $# -ne 0 ]; then echo "ERROR: $0: unexpected argument '$1' (see $0 --help)" >&2; exit 1; fi

# Options are checked before anything runs: a typo must not skip stages and still say "Done".
die() { echo "ERROR: $0: $*" >&2; exit 1; }
require_int() {  # name value min [max]
  [[ "$2" =~ ^[0-9]+$ ]] || die "--$1 '$2' is not a whole number; give e.g. --$1 $3"
  [ "$2" -ge "$3" ] || die "--$1 $2 is below $3; give a value of at least $3"
  [ -z "${4:-}" ] || [ "$2" -le "$4" ] || die "--$1 $2 is above $4; give a value between $3 and $4"
}
require_int stage "$stage" 0 8
require_int stop_stage "$stop_stage" 0 8
[ "$stage" -le "$stop_stage" ] || die "--stage $stage is after --stop_stage $stop_stage; nothing would run"
require_int nj "$nj" 1
[ "$binary" = true ] || [ "$binary" = false ] || die "--binary '$binary' must be true or false"
require_int nproc_per_node "$nproc_per_node" 1
require_int nnodes "$nnodes" 1
require_int node_rank "$node_rank" 0 $((nnodes - 1))
[ -z "$master_port" ] || require_int master_port "$master_port" 1 65535
[ -f "$config" ] || die "--config $config: config file not found; pass an existing file (see conf/)"
for root in data exp; do
  dir="${!root}"
  [ -n "$dir" ] || die "--$root is empty; give a directory"
  [ ! -e "$dir" ] || [ -d "$dir" ] || die "--$root $dir exists and is not a directory; give a directory"
done

. ./path.sh
. ./cmd.sh

[ -z "$corpus" ] || case "$corpus" in
  synthetic|voxceleb|kaldi) ;;
  *) die "--corpus '$corpus' is not one of synthetic, voxceleb, kaldi" ;;
esac

# Options for one corpus are errors with another, never silently ignored: checked before the config
# is read when --corpus is given (the config may not fit the other corpus), else with the config's.
check_corpus_options() {
  local opt for_corpus
  for opt in voxceleb1_root voxceleb2_root vox1_trials vox2_convert_dir train_dir test_dir trials; do
    case "$opt" in train_dir|test_dir|trials) for_corpus=kaldi ;; *) for_corpus=voxceleb ;; esac
    if [ -n "${!opt}" ] && [ "$corpus" != "$for_corpus" ]; then
      die "--$opt applies to --corpus $for_corpus, but the corpus is '$corpus'; add --corpus $for_corpus or drop --$opt"
    fi
    # Corpus paths are read by stage 0 only: later stages use the data dirs it made.
    if [ -n "${!opt}" ] && [ "$stage" -gt 0 ]; then
      die "--$opt is read by stage 0 only, and --stage is $stage; to score new data with a trained model use local/evaluate.sh (see --help)"
    fi
  done
}
[ -z "$corpus" ] || check_corpus_options

overrides=()
add_override() { [ -z "$2" ] || overrides+=(--set "$1=$2"); }
add_override data.corpus "$corpus"
add_override data.voxceleb.vox1_root "$voxceleb1_root"
add_override data.voxceleb.vox2_root "$voxceleb2_root"
add_override data.voxceleb.trials_dir "$vox1_trials"
add_override data.voxceleb.convert_dir "$vox2_convert_dir"
add_override augment.musan_root "$musan_root"
add_override augment.rirs_root "$rirs_root"
add_override model.backbone.path "$ssl_model"
add_override data.kaldi.train_dir "$train_dir"
add_override data.kaldi.test_dir "$test_dir"
add_override data.kaldi.trials "$trials"
for kv in ${set[@]+"${set[@]}"}; do overrides+=(--set "$kv"); done
common=(--config "$config" ${overrides[@]+"${overrides[@]}"})

# Python owns every name and path (voxadapt/layout.py); asked once, they come back as shell variables:
# corpus, expdir, model_dir, log_dir, data_lock, exp_lock, all_sets, backbone_source, set_dir[<set>], xvector_dir[<set>].
paths=$(python -m voxadapt.stages paths "${common[@]}" --data "$data" --exp "$exp")
eval "$paths"

check_corpus_options

log() { echo "$(date '+%F %T') [run.sh] $*"; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

# Stages 3-4 read the pre-trained backbone: a missing --ssl_model is said now, not after stages 0-2.
if run_stage 3 || run_stage 4; then
  if [ -n "$ssl_model" ]; then
    case "$ssl_model" in *.pt | *.pth | *.ckpt) die "--ssl_model $ssl_model: a fairseq/UniSpeech .pt checkpoint is not read:" \
      "give the transformers directory of the same model (huggingface-cli download microsoft/wavlm-large --local-dir models/wavlm-large)" ;; esac
    [ -d "$ssl_model" ] || die "--ssl_model $ssl_model: not found; give an existing local save_pretrained directory"
  elif [ -z "$backbone_source" ]; then
    die "--ssl_model is not given and $config has no model.backbone.path: stages 3-4 need pre-trained weights;" \
        "give --ssl_model DIR (a local save_pretrained directory), or model.backbone.arch in the config for a random init"
  fi
fi

if run_stage 5; then
  for s in $extract_sets; do
    [[ " $all_sets " == *" $s "* ]] || die "--extract_sets: '$s' is not a set of this corpus ($all_sets)"
  done
fi

node=""
[ "$nnodes" -gt 1 ] && node=".node$node_rank"  # one log per node on a shared file system

# Two runs writing one experiment, or preparing one data root, would overwrite each other's files.
# A run that prepares data waits for another preparing the same root (then finds it done); a
# second run on an experiment in use stops. A lock ends with its run, however it ends.
. utils/lock.sh
if [ "$stage" -le 2 ]; then
  mkdir -p "$data"
  if ! lock_dir "$data_lock"; then
    log "waiting for another run preparing $data (it holds $data_lock)"
    flock -x "$lock_fd"
  fi
  data_lock_fd=$lock_fd
fi
if [ "$stop_stage" -ge 3 ]; then
  mkdir -p "$expdir"
  lock_dir "$exp_lock$node" ||
    die "another run is using $expdir (it holds $exp_lock$node); wait for it to end, or give this run another --exp"
fi

if run_stage 0; then
  # reads: the corpus (generated, --voxceleb*_root, or --train_dir/--test_dir/--trials)
  # writes: $data/<set>/{wav.scp,utt2spk,spk2utt,reco2dur,trials*} for every set
  log "Stage 0: data dirs"
  python -m voxadapt.stages data "${common[@]}" --data "$data" --nj "$nj"
fi

if run_stage 1; then
  # reads: $data/<set>/   writes: $data/manifests/<set>/{recordings,supervisions,cuts}.jsonl.gz
  log "Stage 1: lhotse manifests"
  python -m voxadapt.stages manifests "${common[@]}" --data "$data"
fi

if run_stage 2; then
  # reads: $data/manifests/<train>/cuts.jsonl.gz (+ --musan_root, --rirs_root)
  # writes: $data/manifests/augment/{noise,music,speech,rir}.jsonl.gz (+ $data/shards/<train>/ with loader.shards)
  log "Stage 2: augmentation resources and speed perturbation"
  python -m voxadapt.stages augment "${common[@]}" --data "$data" --nj "$nj"
fi

[ -z "${data_lock_fd:-}" ] || exec {data_lock_fd}>&-  # prepared: other runs may use and prepare it now

torchrun_args=(--nproc_per_node "$nproc_per_node" --nnodes "$nnodes" --node_rank "$node_rank"
               --master_addr "$master_addr" --master_port "${master_port:-29500}")
if [ "$nnodes" -eq 1 ] && [ -z "$master_port" ]; then
  # One node, no port given: a free port of torchrun's choosing, so experiments can run side by side.
  torchrun_args=(--standalone --nproc_per_node "$nproc_per_node")
fi

if run_stage 3; then
  # reads: $data/manifests/<train>/ (or $data/shards/<train>/), $data/manifests/augment/, $data/dev/ (validation EER)
  # writes: $expdir/config.yaml, $expdir/<phase>/{checkpoints,final,summary.json}, $expdir/tensorboard/
  log "Stage 3: training (log: $log_dir/train$node.log)"
  $train_cmd "$log_dir/train$node.log" \
    python pyscripts/torchrun.py "${torchrun_args[@]}" -m voxadapt.stages train "${common[@]}" --data "$data" --exp "$exp"
fi

if run_stage 4; then
  # reads: stage 3's last phase   writes: $expdir/<adapt phase>/, $expdir/model -> <last phase>/final
  log "Stage 4: adaptation phases and the final model (log: $log_dir/adapt$node.log)"
  $train_cmd "$log_dir/adapt$node.log" \
    python pyscripts/torchrun.py "${torchrun_args[@]}" -m voxadapt.stages adapt "${common[@]}" --data "$data" --exp "$exp"
fi

if run_stage 5; then
  # reads: $data/<set>/, $expdir/model
  # writes: $expdir/embeddings/<set>/{xvector,spk_xvector}.{ark,scp}, num_utts.ark for every set
  log "Stage 5: x-vectors ($nj jobs per set; logs: log/ in each set's x-vector dir)"
  for s in ${extract_sets:-$all_sets}; do
    steps/extract_xvectors.sh --nj "$nj" --cmd "$extract_cmd" "${common[@]}" "$model_dir" "${set_dir[$s]}" "${xvector_dir[$s]}"
  done
fi

if run_stage 6; then
  # reads: $expdir/embeddings/<train>/ (+ the calibration set's x-vectors and trials)
  # writes: $expdir/backend/{mean.vec,lda.mat,plda,cohort.ark,calibration.json}
  log "Stage 6: back-end (mean, LDA, PLDA, AS-norm cohort, calibration)"
  python -m voxadapt.stages backend "${common[@]}" --data "$data" --exp "$exp" --binary "$binary"
fi

if run_stage 7; then
  # reads: $data/<test>/trials*, $expdir/embeddings/<test>/, $expdir/backend/
  # writes: $expdir/scores/<list>/{<method>.score,<method>.llr,det.png,histogram.png}, $expdir/RESULTS.md, results.json
  log "Stage 7: scoring"
  python -m voxadapt.stages score "${common[@]}" --data "$data" --exp "$exp"
fi

if run_stage 8; then
  # reads: $expdir/model, $expdir/backend/   writes: $expdir/package/ (+ model.onnx)
  log "Stage 8: packaged model for 'voxadapt embed|verify|score' and voxadapt.load()"
  python -m voxadapt.stages package "${common[@]}" --exp "$exp"
fi

log "Done (stages $stage..$stop_stage) for $expdir"
