"""One driver per run.sh stage, all of one shape: `run(cfg, data, exp, ...)`.

A driver checks its inputs, skips the work when its marker says the inputs have not changed,
writes its outputs whole (a killed stage leaves nothing half-written) and marks itself done.
The work itself lives in the domain packages (corpus, data, augment, train, backend, models).

  0 data.py       corpus -> <data>/<set>/ (Kaldi data dirs, validated; reco2dur, trial lists)
  1 manifests.py  <data>/<set>/ -> <data>/manifests/<set>/ (lhotse)
  2 augment.py    training cuts -> <data>/manifests/augment/ (+ <data>/shards/<train>/)
  3 train.py      training cuts (or shards) -> <exp>/<phase>/ for train.phases
  4 adapt.py      stage 3's model -> <exp>/<phase>/ for adapt.phases, <exp>/model
  5 extract.py    <data>/<set>/ + <exp>/model -> <exp>/embeddings/<set>/ (run_job, run_merge:
                  run.sh drives the jobs, which may go to a cluster)
  6 backend.py    <exp>/embeddings/<train>/ -> <exp>/backend/
  7 score.py      <exp>/embeddings/<test>/ + <exp>/backend/ -> <exp>/scores/, RESULTS.md
  8 package.py    <exp>/model + <exp>/backend/ -> <exp>/package/
  evaluate.py     local/evaluate.sh: a trained model on a new data dir and trial list
"""
