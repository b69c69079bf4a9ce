"""Self-supervised pre-training of a small SSL model (the one shipped in models/tiny_wavlm)."""
