"""jobs/*.py and the ``slidefleet`` CLI share one code path: same flags, same help, same exits."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
JOBS = {"ingest": "ingest", "score_cohort": "run", "reprocess": "reprocess"}


def _common():
    sys.path.insert(0, str(REPO / "jobs"))
    try:
        return importlib.import_module("_common")
    finally:
        sys.path.remove(str(REPO / "jobs"))


def _help(args: list[str]) -> str:
    done = subprocess.run(
        [sys.executable, *args, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "100"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(("job", "command"), sorted(JOBS.items()))
def test_job_help_is_the_cli_commands_help(job: str, command: str) -> None:
    assert _help([str(REPO / "jobs" / f"{job}.py")]) == _help(["-m", "engine.cli", command])


def test_job_arguments_map_onto_the_cli() -> None:
    common = _common()
    assert common.cli_arguments("reprocess", ["--root", "r", "--strict"]) == [
        "reprocess",
        "--root",
        "r",
        "--strict",
        "--quiet",
    ]
    assert common.cli_arguments("run", ["m.csv", "--progress", "-v", "--model", "a"]) == [
        "-v",
        "run",
        "m.csv",
        "--model",
        "a",
    ]
    for job, command in JOBS.items():
        args = common.cli_arguments(command, ["x.csv", "--root", "r", "--strict"])
        if command == "reprocess":
            args.remove("x.csv")
        parsed = build_parser().parse_args(args)
        assert parsed.command == command, job
        assert parsed.strict and parsed.quiet


def test_every_command_that_runs_slides_has_strict_and_quiet() -> None:
    parser = build_parser()
    for command in ("ingest", "infer", "post", "run", "reprocess", "qc"):
        args = [command, "--root", "r"]
        if command in ("ingest",):
            args.insert(1, "m.csv")
        if command in ("infer", "post"):
            args += ["--model", "m"]
        parsed = parser.parse_args([*args, "--strict", "--quiet"])
        assert parsed.strict and parsed.quiet, command
    reprocess = parser.parse_args(["reprocess", "--root", "r", "--address", "ray://h:10001"])
    assert reprocess.address == "ray://h:10001"
    assert not reprocess.strict
