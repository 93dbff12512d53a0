"""Bag and MIL parameters: the job config's ``mil`` section (``schemas/job-config.schema.json``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.keys import content_hash


class BagParams(BaseModel):
    """Which tiles of a slide form its bag."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    features_model: str | None = Field(
        None,
        description="Embedding extractor whose features/ stores hold the tiles, name[:version].",
    )
    selection: Literal["top_k", "all_tissue"] = Field(
        "top_k",
        description="top_k: the K tiles a score map rates highest (segmentation finds where, MIL "
        "decides); all_tissue: every tile with enough tissue.",
    )
    k: int = Field(64, ge=1, le=100_000, description="Tiles per bag for top_k.")
    score_model: str | None = Field(
        None, description="Model whose score map ranks the tiles for top_k, name[:version]."
    )
    score_class: str | None = Field(
        None, description="Class of score_model that ranks tiles (default: its positive class)."
    )
    min_tissue_fraction: float = Field(
        0.25, ge=0, le=1, description="Tiles with less tissue than this never enter a bag."
    )

    def bag_hash(self, features_model_id: str, score_model_id: str | None) -> str:
        """Hash of what decides a bag's tiles (model ids, not references)."""
        payload = {
            **self.model_dump(mode="json", exclude={"features_model", "score_model"}),
            "features_model_id": features_model_id,
            "score_model_id": score_model_id if self.selection == "top_k" else None,
        }
        return content_hash(payload)


class MilParams(BaseModel):
    """Training and prediction of a gated-attention MIL slide classifier."""

    model_config = ConfigDict(extra="forbid")

    bags: BagParams = Field(default_factory=BagParams)
    name: str = Field("mil", description="Registered name of the trained MIL model.")
    version: str | None = Field(
        None, description="Version to register (default: the next integer)."
    )
    classes: list[str] | None = Field(
        None,
        description="Slide labels in class order (ordinal grades in grade order); default: the "
        "sorted labels of the train split.",
    )
    positive_class: str | None = Field(
        None, description="Class whose probability is the slide score for AUC (default: the last)."
    )
    epochs: int = Field(40, ge=1, le=10_000)
    learning_rate: float = Field(5e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    hidden_dim: int = Field(128, ge=1)
    attention_dim: int = Field(64, ge=1)
    dropout: float = Field(0.25, ge=0, lt=1)
    seed: int = Field(0)
    use_gpu: bool = Field(True, description="Train on one GPU when the cluster has one.")
    slides_per_task: int = Field(16, ge=1, description="Slides per Ray prediction task.")
    bootstrap_resamples: int = Field(2000, ge=0, description="Resamples for the AUC's 95 % CI.")
    top_tiles: int = Field(
        4, ge=0, le=64, description="Top-attention tiles per slide in the report."
    )
