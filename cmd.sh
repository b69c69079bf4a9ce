# How run.sh launches jobs. Each command follows Kaldi's convention:
#   $cmd [options] [JOB=1:N] <log-file> <command...>
# Local machine (default): utils/run.pl-style launcher with per-job logs.
export train_cmd="utils/run_local.sh --tee true"
export extract_cmd="utils/run_local.sh --max-jobs-run 4"
# A Slurm cluster: options (partition, memory, GPUs, time) come from conf/slurm.conf.
#   export train_cmd="utils/run_slurm.sh --config conf/slurm.conf --gpu 1"
#   export extract_cmd="utils/run_slurm.sh --config conf/slurm.conf"
# With Kaldi installed, its own launchers work too:
#   export extract_cmd="$KALDI_ROOT/egs/wsj/s5/utils/slurm.pl"
