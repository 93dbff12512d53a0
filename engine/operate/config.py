"""The job config: one file (YAML, TOML or JSON) for a whole cohort run, validated by section.

Schema: ``schemas/job-config.schema.json``. Every CLI flag of ``slidefleet run`` has a field here;
flags given on the command line override the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.config import read_config_file
from engine.errors import ConfigError
from engine.evaluate.params import MapEvalParams
from engine.infer.params import InferParams
from engine.ingest.params import IngestParams
from engine.keys import content_hash
from engine.mil.params import MilParams
from engine.post.params import PostParams
from engine.qc.params import QcParams
from engine.views.params import ViewParams


class JobConfig(BaseModel):
    """A cohort run: which slides, which models, where, and every stage's parameters."""

    model_config = ConfigDict(extra="forbid")

    manifest: str | None = Field(
        None, description="Manifest CSV/Parquet (relative to the config file or absolute)."
    )
    root: str | None = Field(None, description="Fleet root folder (outputs).")
    models: list[str] = Field(
        default_factory=list, description="Registered models, name[:version]; no version = latest."
    )
    address: str | None = Field(None, description="Ray cluster address; none starts a local Ray.")
    dask_address: str | None = Field(
        None, description="Dask scheduler address for post; none starts a local cluster."
    )
    demo_models: bool = Field(
        False, description="Train and register the demo models first if missing."
    )
    strict: bool = Field(False, description="Exit non-zero when any slide failed any stage.")
    views: bool = Field(True, description="Render heatmaps, GeoJSON and the cohort report.")
    retry_failed: bool = Field(
        False,
        description="Retry slides whose last attempt failed on the same inputs (same content hash, "
        "parameters and model). Off: such slides are skipped until the slide or a parameter changes.",
    )
    stream: bool = Field(
        True,
        description="Overlap the stages: a slide is scored as soon as its store commits and post-processed as "
        "soon as the threshold is fitted (calibration slides go first) and its prediction commits. False: "
        "each stage runs over the whole cohort before the next.",
    )
    stream_queue: int = Field(
        4,
        ge=1,
        le=1024,
        description="Committed slide stores that may wait for each "
        "model's scoring actors before ingest pauses (backpressure).",
    )
    ingest: IngestParams = Field(default_factory=IngestParams)
    qc: QcParams = Field(default_factory=QcParams)
    infer: InferParams = Field(default_factory=InferParams)
    post: PostParams = Field(default_factory=PostParams)
    view: ViewParams = Field(default_factory=ViewParams)
    mil: MilParams = Field(default_factory=MilParams)
    evaluate: MapEvalParams = Field(default_factory=MapEvalParams)

    def stage_hash(self, stage: str) -> str:
        section = getattr(self, stage)
        payload = section.model_dump(mode="json")
        return content_hash(payload)


def load_job_config(path: Path | str | None, overrides: dict[str, Any] | None = None) -> JobConfig:
    """Read a job config file (paths in it are relative to the file) and apply overrides."""
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        data = read_config_file(path)
        base = Path(path).resolve().parent
        for key in ("manifest", "root"):
            if isinstance(data.get(key), str) and not Path(data[key]).expanduser().is_absolute():
                data[key] = str(base / data[key])
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if isinstance(value, dict):
            data[key] = {**(data.get(key) or {}), **value}
        else:
            data[key] = value
    try:
        return JobConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{path or 'job config'}: {problems}") from exc
