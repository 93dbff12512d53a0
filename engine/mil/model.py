"""Gated-attention MIL (Ilse, Tomczak & Welling, ICML 2018, eq. 9), as the field uses it.

A slide is a bag of K tile embeddings ``h_k`` (K x D). Each tile gets an attention weight

    a_k = softmax_k( w^T (tanh(V h_k) * sigmoid(U h_k)) )

the slide embedding is ``z = sum_k a_k h_k`` and a linear classifier on ``z`` gives the slide's
class logits. The attention weights say which tiles decided the answer (the heatmap a pathologist
checks). Bags vary in size; the module takes one bag at a time, as in the paper, so it scripts to
TorchScript and runs on any K.
"""

from __future__ import annotations

import torch
from torch import nn


class GatedAttentionMIL(nn.Module):
    """``logits, attention = model(bag)`` for a bag of shape (K, embedding_dim)."""

    def __init__(
        self,
        embedding_dim: int,
        n_classes: int,
        *,
        hidden_dim: int = 128,
        attention_dim: int = 64,
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        if embedding_dim < 1 or n_classes < 2:
            raise ValueError("embedding_dim must be >= 1 and n_classes >= 2")
        self.embedding_dim = embedding_dim
        self.n_classes = n_classes
        self.project = nn.Sequential(
            nn.Linear(embedding_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout)
        )
        self.attention_v = nn.Linear(hidden_dim, attention_dim)
        self.attention_u = nn.Linear(hidden_dim, attention_dim)
        self.attention_w = nn.Linear(attention_dim, 1)
        self.classifier = nn.Linear(hidden_dim, n_classes)

    def forward(self, bag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, D) -> class logits (n_classes,) and attention weights (K,) summing to 1."""
        h = self.project(bag)
        gate = torch.tanh(self.attention_v(h)) * torch.sigmoid(self.attention_u(h))
        attention = torch.softmax(self.attention_w(gate).squeeze(-1), dim=0)
        slide = attention @ h
        return self.classifier(slide), attention


def attention_entropy(attention: torch.Tensor) -> float:
    """Normalised entropy of a bag's attention in [0, 1]: 0 = one tile decides, 1 = uniform."""
    k = attention.numel()
    if k < 2:
        return 0.0
    p = attention.clamp_min(1e-12)
    return float(-(p * p.log()).sum() / torch.log(torch.tensor(float(k))))
