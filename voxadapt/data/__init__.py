"""Kaldi data dirs, audio access, trial lists and lhotse manifests."""
