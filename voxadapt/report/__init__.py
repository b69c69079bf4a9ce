"""Reports: plots (layer weights, DET curves, score histograms) and results tables."""
