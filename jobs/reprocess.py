"""Ray job, the scheduled one: recompute exactly what a new model version or input made stale.

    ray job submit --working-dir . -- python jobs/reprocess.py --root ROOT [--dry-run] [--strict]

Runs ``slidefleet reprocess`` (same flags; ``--progress`` for progress bars). The job as last
run on ROOT (manifest, models, parameters) is read from ROOT/fleet.json; a model named without
a version follows its latest registered version.
"""

from __future__ import annotations

import sys

from _common import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command("reprocess", argv)


if __name__ == "__main__":
    sys.exit(main())
