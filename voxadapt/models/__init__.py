"""Models: SSL backbones (transformers), back-ends (MHFA, weighted-sum + ASP), AAM-softmax head."""
