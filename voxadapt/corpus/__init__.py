"""Corpus preparation: the embedded synthetic corpus, VoxCeleb, and imported Kaldi data dirs."""
