"""Operating SlideFleet: one-command runs, job configs, run records, reprocessing, watching."""

from engine.operate.config import JobConfig, load_job_config
from engine.operate.pipeline import CohortResult, score_cohort
from engine.operate.reprocess import ReprocessPlan, plan_reprocess, reprocess, watch

__all__ = [
    "CohortResult",
    "JobConfig",
    "ReprocessPlan",
    "load_job_config",
    "plan_reprocess",
    "reprocess",
    "score_cohort",
    "watch",
]
