"""Models: SSL backbones (transformers), pooling heads (MHFA, weighted-sum + ASP, class token), AAM-softmax head."""
