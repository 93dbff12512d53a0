"""Inference parameters (JSON Schema: ``schemas/infer-params.schema.json``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.infer.tta import TTAMode
from engine.keys import content_hash


class FusionConfig(BaseModel):
    """Fuse scores from a second, coarser magnification: ``w0 * fine + w1 * coarse``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mpp_factor: float = Field(
        2.0, gt=1.0, description="Second magnification's mpp as a multiple of the model's."
    )
    weights: tuple[float, float] = Field(
        (0.6, 0.4), description="Weights of the model's and the coarser magnification."
    )

    @model_validator(mode="after")
    def _weights_sum_to_one(self) -> FusionConfig:
        if abs(sum(self.weights) - 1.0) > 1e-6 or min(self.weights) < 0:
            raise ValueError(
                f"fusion weights must be non-negative and sum to 1, got {self.weights}"
            )
        return self


class InferParams(BaseModel):
    """How a model is run over a cohort."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: int = Field(32, ge=1, le=4096, description="Tiles per forward pass.")
    unit_tiles: int = Field(
        8, ge=1, le=64, description="Tiles per side of a work unit (one output chunk)."
    )
    in_flight_per_actor: int = Field(
        3, ge=1, le=64, description="Work units queued per actor (backpressure)."
    )
    reader_threads: int = Field(
        2, ge=1, le=32, description="Concurrent unit reads per actor, overlapping the model."
    )
    gpus_per_actor: float = Field(
        1.0, gt=0, le=8, description="GPU share per actor (0.5 packs two per GPU)."
    )
    cpus_per_actor: float = Field(1.0, gt=0, description="CPUs reserved per actor.")
    max_actors: int | None = Field(
        None,
        ge=1,
        description="Actors wanted (asked of the autoscaler). Default: one per GPU the cluster has or its node "
        "types can add, up to autoscale_max_actors; on CPUs one per cpus_per_actor the cluster has.",
    )
    min_actors: int | None = Field(
        None,
        ge=1,
        description="Placed actors to wait for before scoring starts (at most the actors wanted). Default: all "
        "of them on a fixed cluster (they fit now), 1 with an autoscaler (the rest join as nodes boot).",
    )
    device: Literal["auto", "gpu", "cpu"] = Field(
        "auto",
        description="auto: GPU actors when the cluster has GPUs or its autoscaler can add them, CPUs only when it "
        "can never have one; gpu: GPU actors or a clear error, never a CPU fallback; cpu: CPU actors.",
    )
    autoscale_max_actors: int = Field(
        8,
        ge=1,
        description="Cap on GPU actors asked of an autoscaler whose node types' GPU count Ray does not report.",
    )
    autoscaler_probe_s: float = Field(
        30.0,
        gt=0,
        description="device auto: how long to watch the autoscaler answer a GPU demand before deciding.",
    )
    tta: TTAMode = Field(
        "none", description="Test-time augmentation: none, flips or dihedral (8 transforms)."
    )
    fusion: FusionConfig | None = Field(
        None, description="Two-magnification fusion, off by default."
    )
    mixed_precision: bool = Field(
        True, description="bfloat16/float16 autocast on CUDA (no effect on CPU)."
    )
    channels_last: bool = Field(True, description="channels-last memory format on CUDA.")
    mpp_tolerance: float = Field(
        0.03,
        ge=0,
        le=0.25,
        description="Relative mpp difference within which a pyramid level is read as stored, not resampled "
        "(0.499 µm/px serves a 0.5 µm/px model, as in WSInfer and TIAToolbox); recorded in the prediction.",
    )
    max_actor_restarts: int = Field(
        3, ge=0, description="Restarts of a dead actor (its units are retried)."
    )
    feature_dtype: Literal["float16", "float32"] = Field(
        "float16", description="dtype of the embeddings an embedding_extractor writes to features/."
    )
    actor_start_timeout_s: float = Field(
        600.0,
        gt=0,
        description="How long to wait for the first scoring actor to be placed (scale-up); later ones join the "
        "pool while the run goes on. Expiry is a PlacementTimeout naming what was missing.",
    )

    def output_hash(self) -> str:
        """Hash of the fields that change the scores (not scheduling or placement)."""
        payload = self.model_dump(include={"tta", "fusion", "mixed_precision", "mpp_tolerance"})
        return content_hash(payload)
