"""Ray job, the main one: ingest, score, post-process and render a cohort.

    ray job submit --working-dir . -- python jobs/score_cohort.py MANIFEST \
        --model NAME[:VERSION] --root ROOT [--config job.yaml]

Runs ``slidefleet run`` (same flags; ``--progress`` for progress bars). Paths are as the
cluster's nodes see them (a shared file system), not relative to the uploaded working dir.
Outputs whose inputs, model and parameters are unchanged are skipped, so re-running the job
after a failure or on a grown manifest does only the missing work.
"""

from __future__ import annotations

import sys

from _common import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command("run", argv)


if __name__ == "__main__":
    sys.exit(main())
