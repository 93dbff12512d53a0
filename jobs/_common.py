"""What the job entrypoints share: they run the ``slidefleet`` CLI's own commands.

The entrypoints are scripts for ``ray job submit --working-dir . -- python jobs/<name>.py …``
(and plain ``python jobs/<name>.py`` on a workstation). Each one is ``slidefleet <command>``
with the same flags, summary and exit codes (:mod:`engine.cli`), so the two cannot drift. Two
differences suit job logs: progress bars are off unless ``--progress`` is given (the CLI's
``--quiet`` is then implied), and ``-v`` may come anywhere. Inside a Ray job the driver joins
the cluster through ``RAY_ADDRESS``, which Ray sets and :func:`engine.cluster.ensure_ray`
honours.

Exit codes: 0 done (per-slide failures are rows of ``tables/failures``, not errors);
1 ``--strict`` and some slide failed; 2 a fatal SlideFleet error (bad config, unknown model…).
An unexpected exception ends the job with its traceback and exit code 1.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_OK = 0
EXIT_SLIDES_FAILED = 1
EXIT_FATAL = 2

_REPO = Path(__file__).resolve().parents[1]


def cli_arguments(command: str, argv: Sequence[str]) -> list[str]:
    """``slidefleet`` arguments for this job's ``argv``: ``[-v] command ... [--quiet]``."""
    args = list(argv)
    front: list[str] = []
    for flag in ("-v", "--verbose"):
        while flag in args:
            args.remove(flag)
            front = ["-v"]
    if "--progress" in args:
        args = [a for a in args if a != "--progress"]
    elif "--quiet" not in args:
        args.append("--quiet")
    return [*front, command, *args]


def run_command(command: str, argv: Sequence[str] | None = None) -> int:
    """Run ``slidefleet <command>`` with this job's arguments (the CLI's code path)."""
    if str(_REPO) not in sys.path:  # `python jobs/x.py` puts jobs/, not the repository, first
        sys.path.insert(0, str(_REPO))
    from engine.cli import main

    return main(cli_arguments(command, sys.argv[1:] if argv is None else argv))
