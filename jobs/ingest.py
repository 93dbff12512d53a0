"""Ray job: convert a manifest's slides into OME-Zarr stores under a fleet root.

    ray job submit --working-dir . -- python jobs/ingest.py MANIFEST --root ROOT [--config FILE]

Runs ``slidefleet ingest`` (same flags; ``--progress`` for progress bars). Paths are as the
cluster's nodes see them (a shared file system).
"""

from __future__ import annotations

import sys

from _common import run_command


def main(argv: list[str] | None = None) -> int:
    return run_command("ingest", argv)


if __name__ == "__main__":
    sys.exit(main())
