"""Training and prediction for gated-attention MIL on bags held in memory (pure torch).

Training follows the paper's recipe: one bag per step, Adam, weight decay, class-balanced
cross-entropy (slide cohorts are imbalanced), seeded. The kept model is the epoch with the lowest
loss on the calibration bags (model selection never sees the test split).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from engine.mil.model import GatedAttentionMIL, attention_entropy


@dataclass(frozen=True)
class MilTrainParams:
    epochs: int = 40
    learning_rate: float = 5e-4
    weight_decay: float = 1e-4
    hidden_dim: int = 128
    attention_dim: int = 64
    dropout: float = 0.25
    seed: int = 0


@dataclass
class MilTrainResult:
    model: GatedAttentionMIL
    best_epoch: int
    train_loss: list[float] = field(default_factory=list)
    calibration_loss: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class BagPrediction:
    probabilities: NDArray[np.float32]  # (n_classes,)
    predicted_class: int
    attention: NDArray[np.float32]  # (K,)
    attention_entropy: float


def _class_weights(labels: Sequence[int], n_classes: int) -> torch.Tensor:
    counts = np.bincount(np.asarray(labels), minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def _mean_loss(
    model: nn.Module, loss: nn.Module, bags: Sequence[torch.Tensor], labels: Sequence[int]
) -> float:
    model.eval()
    with torch.no_grad():
        values = [
            float(loss(model(bag)[0].unsqueeze(0), torch.tensor([label], device=bag.device)))
            for bag, label in zip(bags, labels, strict=True)
        ]
    return float(np.mean(values))


def train_mil(
    bags: Sequence[torch.Tensor],
    labels: Sequence[int],
    *,
    n_classes: int,
    calibration_bags: Sequence[torch.Tensor] = (),
    calibration_labels: Sequence[int] = (),
    params: MilTrainParams | None = None,
    device: str | torch.device = "cpu",
) -> MilTrainResult:
    """Train on ``bags`` (each (K_i, D) float32) with slide ``labels`` in ``0..n_classes-1``.

    Without calibration bags the last epoch is kept. The returned model is on the CPU.
    """
    params = params or MilTrainParams()
    if not bags or len(bags) != len(labels):
        raise ValueError(f"need one label per bag; got {len(bags)} bags and {len(labels)} labels")
    dims = {int(b.shape[1]) for b in bags}
    if len(dims) != 1 or any(b.ndim != 2 or b.shape[0] == 0 for b in bags):
        raise ValueError("every bag must be a non-empty (tiles, embedding_dim) matrix of one width")
    torch.manual_seed(params.seed)
    generator = np.random.default_rng(params.seed)
    model = GatedAttentionMIL(
        dims.pop(),
        n_classes,
        hidden_dim=params.hidden_dim,
        attention_dim=params.attention_dim,
        dropout=params.dropout,
    )
    device = torch.device(device)
    model.to(device)
    bags = [b.to(device) for b in bags]
    calibration_bags = [b.to(device) for b in calibration_bags]
    targets = [torch.tensor([label], device=device) for label in labels]
    calibration_targets = [int(label) for label in calibration_labels]
    loss = nn.CrossEntropyLoss(weight=_class_weights(labels, n_classes).to(device))
    optimiser = torch.optim.Adam(
        model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay
    )
    result = MilTrainResult(model=model, best_epoch=params.epochs - 1)
    best_state, best_loss = None, float("inf")
    for epoch in range(params.epochs):
        model.train()
        total = 0.0
        for index in generator.permutation(len(bags)):
            optimiser.zero_grad()
            logits, _ = model(bags[index])
            step = loss(logits.unsqueeze(0), targets[index])
            step.backward()
            optimiser.step()
            total += float(step.detach())
        result.train_loss.append(total / len(bags))
        if calibration_bags:
            value = _mean_loss(model, loss, calibration_bags, calibration_targets)
            result.calibration_loss.append(value)
            if value < best_loss:
                best_loss, best_state, result.best_epoch = (
                    value,
                    copy.deepcopy(model.state_dict()),
                    epoch,
                )
    if best_state is not None:
        model.load_state_dict(best_state)
    model.to("cpu").eval()
    return result


def predict_bag(model: nn.Module, bag: torch.Tensor) -> BagPrediction:
    """Class probabilities, predicted class and attention of one bag (K, D)."""
    model.eval()
    with torch.no_grad():
        logits, attention = model(bag)
    probabilities = torch.softmax(logits, dim=0)
    return BagPrediction(
        probabilities=probabilities.numpy().astype(np.float32),
        predicted_class=int(probabilities.argmax()),
        attention=attention.numpy().astype(np.float32),
        attention_entropy=attention_entropy(attention),
    )
