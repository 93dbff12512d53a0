"""Slide-level answers from bags of tile embeddings: gated-attention multiple-instance learning."""
