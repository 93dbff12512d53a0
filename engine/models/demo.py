"""Demo models, trained here in seconds on SlideFleet's synthetic patches.

No weights can be downloaded, so the project makes its own, honestly named toy models:

* ``demo-unet-tumour``: a small U-Net, binary tumour pixel segmenter (one sigmoid channel);
* ``demo-segmenter-3class``: the same network with background / stroma / tumour softmax;
* ``demo-patch-classifier``: a small CNN, normal vs tumour per tile;
* ``demo-anomaly-ae``: a convolutional autoencoder trained on normal tiles only; the exported
  module returns its per-pixel reconstruction error (at the output stride) as the score.
* ``demo-embedder``: an embedding extractor, the patch classifier's backbone (trained the same
  way) with its classifier removed: 64 pooled features per 128 px tile, for MIL.

Each is traced to TorchScript and registered through :class:`ModelRegistry`, exactly like a
user's model. Training is deterministic for a given seed, torch build and CPU.
"""

from __future__ import annotations

import logging
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from engine.errors import ModelError
from engine.models.adapters import normalise
from engine.models.card import ModelCard, Normalisation
from engine.models.registry import ModelRegistry, RegisteredModel

log = logging.getLogger(__name__)

DEMO_VERSION = "1.0.0"
DEMO_TILE_SIZE_PX = 128
DEMO_MPP = 2.0
DEMO_OVERLAP_PX = 16
DEMO_OUTPUT_STRIDE = 4
DEMO_EMBEDDING_DIM = 64  # TinyPatchClassifier width 8: 4w channels, mean and max pooled
_N_TRAIN_PATCHES = 160
_SEGMENTER_STEPS = 60
_CLASSIFIER_STEPS = 60
_AUTOENCODER_STEPS = 80

_TRAINING_DATA = (
    "Toy model: trained for a few seconds on {n} synthetic 128x128 px patches at 2.0 um/px drawn "
    "by SlideFleet's own generator (engine.synth.render_patch, seed {seed}): procedural H&E-like "
    "textures, not real tissue. Not for clinical or research use."
)
_INTENDED_USE = (
    "Exercising and testing the SlideFleet pipeline on synthetic cohorts. Not for clinical use "
    "and not meaningful on real slides."
)
_NOT_CLINICAL = "Toy model trained in seconds on synthetic tiles; not for clinical use."


@dataclass(frozen=True)
class _DemoTrainingSet:
    tiles: NDArray[np.uint8]  # (N, H, W, 3)
    masks: NDArray[np.uint8]  # (N, H, W): 0 glass, 1 tissue, 2 tumour
    seed: int


# ---------------------------------------------------------------------------------------------
# Networks (TorchScript-scriptable)


def _block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class TinyUNet(nn.Module):
    """Encoder to 1/16, decoder back to 1/4 with skip connections at 1/8 and 1/4."""

    def __init__(self, out_channels: int, width: int = 8) -> None:
        super().__init__()
        w = width
        self.enc1 = nn.Sequential(_block(3, w, 2), _block(w, w))  # 1/2
        self.enc2 = nn.Sequential(_block(w, 2 * w, 2), _block(2 * w, 2 * w))  # 1/4
        self.enc3 = nn.Sequential(_block(2 * w, 4 * w, 2), _block(4 * w, 4 * w))  # 1/8
        self.enc4 = nn.Sequential(_block(4 * w, 4 * w, 2), _block(4 * w, 4 * w))  # 1/16
        self.dec3 = _block(8 * w, 4 * w)
        self.dec2 = _block(6 * w, 2 * w)
        self.head = nn.Conv2d(2 * w, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e2 = self.enc2(self.enc1(x))
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        d3 = self.dec3(torch.cat([F.interpolate(e4, scale_factor=2.0, mode="nearest"), e3], 1))
        d2 = self.dec2(torch.cat([F.interpolate(d3, scale_factor=2.0, mode="nearest"), e2], 1))
        return self.head(d2)


class TinyPatchClassifier(nn.Module):
    """Strided convolutions, then global average and max pooling, then a linear layer."""

    def __init__(self, num_classes: int, width: int = 8) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _block(3, w, 2), _block(w, 2 * w, 2), _block(2 * w, 4 * w, 2), _block(4 * w, 4 * w, 2)
        )
        self.fc = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        pooled = torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], 1)
        return self.fc(pooled)


class PooledFeatures(nn.Module):
    """A patch classifier's backbone without its classifier: (N, 8w) mean- and max-pooled features."""

    def __init__(self, classifier: TinyPatchClassifier) -> None:
        super().__init__()
        self.features = classifier.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], 1)


class TinyAutoencoder(nn.Module):
    """A convolutional autoencoder with an 8-channel bottleneck at 1/16 resolution."""

    def __init__(self, width: int = 8, latent_channels: int = 8) -> None:
        super().__init__()
        w = width
        self.encoder = nn.Sequential(
            _block(3, w, 2),
            _block(w, 2 * w, 2),
            _block(2 * w, 4 * w, 2),
            _block(4 * w, 4 * w, 2),
            nn.Conv2d(4 * w, latent_channels, 1),
        )
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2.0, mode="nearest"),
            _block(latent_channels, 4 * w),
            nn.Upsample(scale_factor=2.0, mode="nearest"),
            _block(4 * w, 2 * w),
            nn.Upsample(scale_factor=2.0, mode="nearest"),
            _block(2 * w, w),
            nn.Upsample(scale_factor=2.0, mode="nearest"),
            nn.Conv2d(w, 3, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class ReconstructionErrorScorer(nn.Module):
    """Wraps an autoencoder: returns mean squared reconstruction error per ``stride`` px cell."""

    def __init__(self, autoencoder: TinyAutoencoder, stride: int) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        error = (self.autoencoder(x) - x).pow(2).mean(dim=1, keepdim=True)
        return F.avg_pool2d(error, self.stride)


# ---------------------------------------------------------------------------------------------
# Public entry point


def make_demo_models(root: Path | str, *, seed: int = 0) -> list[RegisteredModel]:
    """Train the five demo models (four scorers and the demo embedder) and register them under ``ROOT/models/``.

    A demo model already registered with the same card (same seed) is kept, not retrained, so
    running this twice is cheap and a no-op. A fresh process with the same seed, torch build and
    CPU produces byte-identical files (the same model_ids).
    """
    started = time.perf_counter()
    registry = ModelRegistry(root)
    data = _render_training_set(seed=seed, n_patches=_N_TRAIN_PATCHES)
    log.info(
        "rendered %d training patches in %.1f s", len(data.tiles), time.perf_counter() - started
    )
    normalisation = _fit_normalisation(data.tiles)
    registered: list[RegisteredModel] = []
    for fields, train in _DEMOS:
        card = _demo_card(fields, normalisation, seed)
        existing = _registered(registry, card)
        if existing is not None:
            log.info(
                "%s is already registered (model_id %s); not retrained", card.ref, existing.model_id
            )
            registered.append(existing)
            continue
        t0 = time.perf_counter()
        with _seeded(seed):
            module = train(data, normalisation)
        registered.append(_register(registry, module, card))
        log.info("trained and registered %s in %.1f s", card.ref, time.perf_counter() - t0)
    log.info("demo models ready in %.1f s", time.perf_counter() - started)
    return registered


def _registered(registry: ModelRegistry, card: ModelCard) -> RegisteredModel | None:
    try:
        existing = registry.resolve(card.ref)
    except ModelError:
        return None
    if existing.card != card:
        raise ModelError(
            f"{card.ref} is already registered in {registry.models_dir} with a different card "
            "(another seed?); use a fresh root"
        )
    return existing


def _render_training_set(*, seed: int, n_patches: int) -> _DemoTrainingSet:
    """Half tumour, half normal patches from ``engine.synth.render_patch``."""
    from engine.synth.patches import render_patch

    rng = np.random.default_rng(seed)
    tiles = np.empty((n_patches, DEMO_TILE_SIZE_PX, DEMO_TILE_SIZE_PX, 3), dtype=np.uint8)
    masks = np.empty((n_patches, DEMO_TILE_SIZE_PX, DEMO_TILE_SIZE_PX), dtype=np.uint8)
    for index in range(n_patches):
        tiles[index], masks[index] = render_patch(
            rng, size_px=DEMO_TILE_SIZE_PX, mpp=DEMO_MPP, tumour=bool(index % 2)
        )
    return _DemoTrainingSet(tiles=tiles, masks=masks, seed=seed)


# ---------------------------------------------------------------------------------------------
# Training


def _fit_normalisation(tiles: NDArray[np.uint8]) -> Normalisation:
    pixels = tiles.reshape(-1, 3).astype(np.float64) / 255.0
    mean = tuple(round(float(v), 3) for v in pixels.mean(axis=0))
    std = tuple(round(float(v), 3) for v in pixels.std(axis=0))
    return Normalisation(input_scale="0-1", mean=mean, std=std)  # type: ignore[arg-type]


def _inputs(data: _DemoTrainingSet, normalisation: Normalisation) -> torch.Tensor:
    return normalise(data.tiles, normalisation)


def _class_fractions(masks: NDArray[np.uint8], stride: int) -> torch.Tensor:
    """(N, H, W) labels -> (N, 3, H/stride, W/stride) share of each class per output pixel."""
    one_hot = F.one_hot(torch.from_numpy(masks).long(), 3).permute(0, 3, 1, 2).float()
    return F.avg_pool2d(one_hot, stride)


def _augment(
    x: torch.Tensor, y: torch.Tensor | None, crop_px: int | None, target_stride: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A random crop (aligned to the target's stride), flip and 90-degree rotation.

    The same transform is applied to dense targets (N, C, h, w); per-tile targets pass through.
    """
    dense = y is not None and y.ndim == 4
    if crop_px is not None and crop_px < x.shape[-1]:
        cells = (x.shape[-1] - crop_px) // target_stride
        oy, ox = (int(v) * target_stride for v in torch.randint(0, cells + 1, (2,)))
        x = x[..., oy : oy + crop_px, ox : ox + crop_px]
        if dense:
            assert y is not None
            c, s = crop_px // target_stride, target_stride
            y = y[..., oy // s : oy // s + c, ox // s : ox // s + c]
    k = int(torch.randint(0, 4, (1,)))
    flip = bool(torch.randint(0, 2, (1,)))
    x = torch.rot90(x, k, dims=(2, 3))
    x = (x.flip(3) if flip else x).contiguous()
    if dense:
        assert y is not None
        y = torch.rot90(y, k, dims=(2, 3))
        y = (y.flip(3) if flip else y).contiguous()
    return x, y


def _fit(
    model: nn.Module,
    x: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    target: torch.Tensor | None,
    *,
    steps: int,
    crop_px: int | None = None,
    target_stride: int = DEMO_OUTPUT_STRIDE,
    lr: float = 5e-3,
    batch_size: int = 16,
) -> None:
    """Adam with a one-cycle schedule; ``target=None`` trains an autoencoder (target = input)."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps)
    model.train()
    for _ in range(steps):
        index = torch.randint(0, len(x), (batch_size,))
        yb = None if target is None else target[index]
        xb, yb = _augment(x[index], yb, crop_px, target_stride)
        loss = loss_fn(model(xb), xb if yb is None else yb)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
    model.eval()


def _train_unet_tumour(data: _DemoTrainingSet, normalisation: Normalisation) -> nn.Module:
    x = _inputs(data, normalisation)
    tumour_share = _class_fractions(data.masks, DEMO_OUTPUT_STRIDE)[:, 2:3]
    model = TinyUNet(out_channels=1)
    _fit(
        model,
        x,
        F.binary_cross_entropy_with_logits,
        tumour_share,
        steps=_SEGMENTER_STEPS,
        crop_px=64,
    )
    return model


def _train_segmenter_3class(data: _DemoTrainingSet, normalisation: Normalisation) -> nn.Module:
    x = _inputs(data, normalisation)
    shares = _class_fractions(data.masks, DEMO_OUTPUT_STRIDE)
    model = TinyUNet(out_channels=3)
    _fit(model, x, F.cross_entropy, shares, steps=_SEGMENTER_STEPS, crop_px=64)
    return model


def _train_patch_classifier(data: _DemoTrainingSet, normalisation: Normalisation) -> nn.Module:
    x = _inputs(data, normalisation)
    labels = torch.from_numpy((data.masks == 2).any(axis=(1, 2))).long()
    model = TinyPatchClassifier(num_classes=2)
    _fit(model, x, F.cross_entropy, labels, steps=_CLASSIFIER_STEPS)
    return model


def _train_embedder(data: _DemoTrainingSet, normalisation: Normalisation) -> nn.Module:
    return PooledFeatures(_train_patch_classifier(data, normalisation)).eval()


def _train_anomaly_ae(data: _DemoTrainingSet, normalisation: Normalisation) -> nn.Module:
    normal = ~(data.masks == 2).any(axis=(1, 2))
    x = _inputs(data, normalisation)[torch.from_numpy(normal)]
    autoencoder = TinyAutoencoder()
    _fit(autoencoder, x, F.mse_loss, None, steps=_AUTOENCODER_STEPS, crop_px=64)
    return ReconstructionErrorScorer(autoencoder, DEMO_OUTPUT_STRIDE).eval()


_UNET = "TinyUNet (4 levels, width 8, output 1/4)"
_DEMOS: tuple[
    tuple[dict[str, Any], Callable[[_DemoTrainingSet, Normalisation], nn.Module]], ...
] = (
    (
        {
            "name": "demo-unet-tumour",
            "kind": "pixel_segmenter",
            "class_names": ("tumour",),
            "positive_class": "tumour",
            "overlap_px": DEMO_OVERLAP_PX,
            "output_stride": DEMO_OUTPUT_STRIDE,
            "output_activation": "sigmoid",
            "architecture": _UNET,
            "description": "Binary tumour segmenter: one logit per 4x4 px cell; sigmoid gives "
            "P(tumour).",
        },
        _train_unet_tumour,
    ),
    (
        {
            "name": "demo-segmenter-3class",
            "kind": "pixel_segmenter",
            "class_names": ("background", "stroma", "tumour"),
            "positive_class": "tumour",
            "overlap_px": DEMO_OVERLAP_PX,
            "output_stride": DEMO_OUTPUT_STRIDE,
            "output_activation": "softmax",
            "architecture": _UNET,
            "description": "Three-class segmenter (background glass, stroma / normal tissue, "
            "tumour), softmax over three logits per 4x4 px cell.",
        },
        _train_segmenter_3class,
    ),
    (
        {
            "name": "demo-patch-classifier",
            "kind": "patch_classifier",
            "class_names": ("normal", "tumour"),
            "positive_class": "tumour",
            "overlap_px": 0,
            "output_stride": DEMO_TILE_SIZE_PX,
            "output_activation": "softmax",
            "architecture": "TinyPatchClassifier (4 strided conv blocks, width 8)",
            "description": "Patch classifier: does a 128 px tile contain tumour? Softmax over "
            "two logits.",
        },
        _train_patch_classifier,
    ),
    (
        {
            "name": "demo-anomaly-ae",
            "kind": "anomaly_scorer",
            "class_names": ("anomaly",),
            "overlap_px": DEMO_OVERLAP_PX,
            "output_stride": DEMO_OUTPUT_STRIDE,
            "output_activation": "none",
            "architecture": "TinyAutoencoder (8-channel bottleneck at 1/16)",
            "description": "Anomaly scorer: an autoencoder trained on normal (tumour-free) tiles "
            "only; the score is the mean squared reconstruction error of the normalised input "
            "per 4x4 px cell, so tissue unlike the training tiles scores high.",
        },
        _train_anomaly_ae,
    ),
    (
        {
            "name": "demo-embedder",
            "kind": "embedding_extractor",
            "embedding_dim": DEMO_EMBEDDING_DIM,
            "overlap_px": 0,
            "output_stride": DEMO_TILE_SIZE_PX,
            "output_activation": "none",
            "architecture": "TinyPatchClassifier backbone (4 strided conv blocks, width 8), "
            "global mean and max pooling",
            "description": "Embedding extractor: 64 features per 128 px tile (mean- and "
            "max-pooled activations of demo-patch-classifier's backbone, trained the same way), "
            "for attention MIL on bags of tiles.",
        },
        _train_embedder,
    ),
)

#: Names of the demo models that are embedding extractors (features, not score maps).
DEMO_EXTRACTOR_NAMES: frozenset[str] = frozenset(
    str(fields["name"]) for fields, _ in _DEMOS if fields["kind"] == "embedding_extractor"
)


def _demo_card(fields: dict[str, Any], normalisation: Normalisation, seed: int) -> ModelCard:
    return ModelCard.model_validate(
        {
            **fields,
            "version": DEMO_VERSION,
            "tile_size_px": DEMO_TILE_SIZE_PX,
            "mpp": DEMO_MPP,
            "normalisation": normalisation,
            "description": f"{fields['description']} {_NOT_CLINICAL}",
            "training_data": _TRAINING_DATA.format(n=_N_TRAIN_PATCHES, seed=seed),
            "intended_use": _INTENDED_USE,
            "license": "Apache-2.0",
            "stain": "synthetic H&E-like",
        }
    )


# ---------------------------------------------------------------------------------------------
# Export and registration


class _seeded:
    """Seed torch and use one intra-op thread for one model; restore both afterwards.

    One thread makes the weights independent of the machine's core count, and avoids OpenMP
    spin-waiting, which on a busy 2-core machine made training 20x slower than on an idle one.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        self.state = torch.random.get_rng_state()
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)
        torch.manual_seed(self.seed)

    def __exit__(self, *exc: object) -> None:
        torch.random.set_rng_state(self.state)
        torch.set_num_threads(self.threads)


def export_torchscript(module: nn.Module, path: Path, *, tile_size_px: int) -> Path:
    """Trace ``module`` to TorchScript and save it with reproducible bytes.

    Tracing rather than scripting: a scripted archive lists module constants in hash-seed
    order, so its bytes (and model_id) would change from one process to the next. The debug
    source maps are dropped because they hold absolute paths of the Python sources.
    """
    example = torch.zeros(2, 3, tile_size_px, tile_size_px)
    with torch.no_grad():
        traced = torch.jit.trace(module.eval(), example)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / path.name
        traced.save(str(raw))
        with (
            zipfile.ZipFile(raw) as source,
            zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target,
        ):
            for info in source.infolist():
                if info.filename.endswith(".debug_pkl"):
                    continue
                entry = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
                target.writestr(entry, source.read(info))
    return path


def _register(registry: ModelRegistry, module: nn.Module, card: ModelCard) -> RegisteredModel:
    with tempfile.TemporaryDirectory() as tmp:
        model_path = export_torchscript(
            module, Path(tmp) / "model.pt", tile_size_px=card.tile_size_px
        )
        return registry.add(model_path, card)
