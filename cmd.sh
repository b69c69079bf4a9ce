# How run.sh launches jobs. Each command follows Kaldi's launcher convention:
#   $cmd [options] [JOB=1:N] <log-file> <command...>
# A value already in the environment wins, e.g.  extract_cmd="utils/run_slurm.sh" ./run.sh
#
# This machine (default): per-job logs, a failing job fails the call and names its log.
export train_cmd="${train_cmd:-utils/run_local.sh --tee true}"
export extract_cmd="${extract_cmd:-utils/run_local.sh --max-jobs-run 4}"
# A Slurm cluster (partition, memory, time in conf/slurm.conf; stage 3 on many nodes:
# local/slurm_train.sbatch):
#   export train_cmd="utils/run_slurm.sh --config conf/slurm.conf --gpu 1 --num-threads 8"
#   export extract_cmd="utils/run_slurm.sh --config conf/slurm.conf --num-threads 2"
# Kaldi's own launchers work as well:
#   export extract_cmd="$KALDI_ROOT/egs/wsj/s5/utils/slurm.pl"
