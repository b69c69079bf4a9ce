"""Back-ends: mean, LDA, two-covariance PLDA (Kaldi formats), cosine, AS-norm, calibration."""
