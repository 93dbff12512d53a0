"""Gated-attention MIL learns slide labels from bags and attends to the tiles that decide them."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from engine.metrics.slide_level import slide_auc
from engine.mil.model import GatedAttentionMIL, attention_entropy
from engine.mil.train import MilTrainParams, predict_bag, train_mil

DIM = 16


def make_bags(n: int, seed: int) -> tuple[list[torch.Tensor], list[int], list[np.ndarray]]:
    """Bags of 20-60 'tile embeddings'; a positive bag hides 2-5 tumour tiles (shifted in one
    direction) among normal ones, so only attention to those few tiles can tell the bags apart."""
    rng = np.random.default_rng(seed)
    direction = np.zeros(DIM)
    direction[:4] = 1.5
    bags, labels, tumour_masks = [], [], []
    for i in range(n):
        k = int(rng.integers(20, 61))
        features = rng.normal(0, 1, (k, DIM))
        tumour = np.zeros(k, bool)
        label = i % 2
        if label:
            tumour[rng.choice(k, int(rng.integers(2, 6)), replace=False)] = True
            features[tumour] += direction
        bags.append(torch.tensor(features, dtype=torch.float32))
        labels.append(label)
        tumour_masks.append(tumour)
    return bags, labels, tumour_masks


def test_attention_sums_to_one_and_model_scripts() -> None:
    model = GatedAttentionMIL(DIM, 3).eval()
    bag = torch.randn(7, DIM)
    logits, attention = model(bag)
    assert logits.shape == (3,) and attention.shape == (7,)
    assert float(attention.detach().sum()) == pytest.approx(1.0, abs=1e-6)
    scripted = torch.jit.script(model)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    reloaded = torch.jit.load(buffer)
    for k in (1, 7, 300):  # any bag size
        bag = torch.randn(k, DIM)
        torch.testing.assert_close(reloaded(bag)[0], model(bag)[0])
    assert attention_entropy(torch.full((8,), 1 / 8)) == pytest.approx(1.0)
    assert attention_entropy(torch.tensor([1.0, 0, 0, 0])) == pytest.approx(0.0, abs=1e-9)


def test_mil_learns_from_a_few_tumour_tiles_and_attends_to_them() -> None:
    train_bags, train_labels, _ = make_bags(80, seed=1)
    cal_bags, cal_labels, _ = make_bags(20, seed=2)
    test_bags, test_labels, test_tumour = make_bags(40, seed=3)
    result = train_mil(
        train_bags,
        train_labels,
        n_classes=2,
        calibration_bags=cal_bags,
        calibration_labels=cal_labels,
        params=MilTrainParams(epochs=15, seed=0),
    )
    assert len(result.calibration_loss) == 15
    assert result.calibration_loss[result.best_epoch] == min(result.calibration_loss)
    predictions = [predict_bag(result.model, bag) for bag in test_bags]
    auc = slide_auc(test_labels, [p.probabilities[1] for p in predictions])
    assert auc is not None and auc > 0.9
    positives = [i for i, label in enumerate(test_labels) if label == 1]
    top_is_tumour = [test_tumour[i][int(predictions[i].attention.argmax())] for i in positives]
    assert np.mean(top_is_tumour) > 0.8
    # Positive bags are decided by a few tiles: their attention is more concentrated.
    entropy = {
        label: np.mean(
            [
                p.attention_entropy
                for p, y in zip(predictions, test_labels, strict=True)
                if y == label
            ]
        )
        for label in (0, 1)
    }
    assert entropy[1] < entropy[0]


def test_training_is_seeded() -> None:
    bags, labels, _ = make_bags(10, seed=5)
    first = train_mil(bags, labels, n_classes=2, params=MilTrainParams(epochs=2, seed=4))
    second = train_mil(bags, labels, n_classes=2, params=MilTrainParams(epochs=2, seed=4))
    for a, b in zip(
        first.model.state_dict().values(), second.model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="one label per bag"):
        train_mil(bags, labels[:-1], n_classes=2)


def test_mil_cli_checks_bag_flags_and_predict_takes_them_from_the_model(tmp_path, capsys) -> None:
    """`--k 0` is refused by name before any work; predict has no bag flags (the card has them)."""
    from engine.cli import main

    args = ["mil", "train", "--root", str(tmp_path), "--manifest", str(tmp_path / "m.csv")]
    assert main([*args, "--k", "0"]) == 2
    assert "mil.bags.k" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(
            [
                "mil",
                "predict",
                "--root",
                str(tmp_path),
                "--manifest",
                "m.csv",
                "--model",
                "m",
                "--k",
                "3",
            ]
        )
