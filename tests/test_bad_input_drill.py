"""Drill: an unattended nightly cohort mixing every kind of broken row with good slides.

``slidefleet run`` is run as a user runs it (a subprocess, joined to the session's Ray) on the
good rows alone, then on the good rows plus one row of every broken kind. The drill run must
finish (a hang hits the subprocess timeout), exit 0, give exactly one clear failures row per bad
row, and produce the same results for the good slides as the clean run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from engine.tables import failures_view, read_table
from tests.infer_models import Darkness, darkness_card, register

REPO = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 900  # far above a normal run of 4 small slides; a hang would never end
PROVENANCE = {"run_id", "engine_version", "written_at"}


def _slidefleet(args: list[str], address: str | None = None) -> subprocess.CompletedProcess[str]:
    joined = ["--address", address] if address else []
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args, *joined, "--quiet"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _rows(root: Path, table: str) -> list[dict[str, object]]:
    rows = []
    for row in read_table(root / "tables", table).to_pylist():
        rows.append(
            {
                k: (v.replace(str(root), "ROOT") if isinstance(v, str) else v)
                for k, v in row.items()
                if k not in PROVENANCE
            }
        )
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


@pytest.fixture
def drill(synth_cohort: Path, tmp_path: Path):
    """The synthetic cohort's manifest (good rows) and a copy with every broken kind added."""
    cohort = tmp_path / "cohort"
    shutil.copytree(synth_cohort.parent, cohort)
    good = cohort / synth_cohort.name
    text = good.read_text(encoding="utf-8")
    header = text.splitlines()[0].split(",")
    assert header[:2] == ["slide_id", "path"]
    blanks = "," * (len(header) - 2)
    a_good_path = text.splitlines()[1].split(",")[1]

    os.mkfifo(cohort / "pipe.tif")
    (cohort / "folder.tif").mkdir()
    (cohort / "loop.tif").symlink_to(cohort / "loop.tif")
    (cohort / "not_a_slide.tif").write_text("this is a text file, not a TIFF\n")
    short = Path(tempfile.mkdtemp(prefix="sf", dir="/tmp"))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(short / "s.tif"))

    label_col = header.index("label")
    bad_label = [""] * len(header)
    bad_label[:2] = ["badbyte", a_good_path]
    bad_label[label_col] = "tum\udce9ur"  # one Latin-1 byte in a UTF-8 file
    long_id = "L" * 10_000
    bad_rows = {  # slide_id in the failures table -> (row text, expected error type, words)
        "devzero": (f"devzero,/dev/zero{blanks}", "NotARegularFile", "character device"),
        "fifo": (f"fifo,pipe.tif{blanks}", "NotARegularFile", "named pipe"),
        "folder": (f"folder,folder.tif{blanks}", "NotARegularFile", "a folder"),
        "sock": (f"sock,{short / 's.tif'}{blanks}", "NotARegularFile", "a socket"),
        "loop": (f"loop,loop.tif{blanks}", "NotARegularFile", "symlink loop"),
        "missing": (f"missing,nowhere.tif{blanks}", "SlideNotFound", "not found"),
        "textfile": (f"textfile,not_a_slide.tif{blanks}", "SlideUnreadable", "not_a_slide.tif"),
        "badbyte": (",".join(bad_label), "ManifestError", "column 'label' is not UTF-8"),
        "bad id!": (f"bad id!,{a_good_path}{blanks}", "InvalidSlideId", "is not allowed"),
        "<empty>": (f",{a_good_path}{blanks}", "InvalidSlideId", "empty slide_id"),
        "too_many": (
            f"too_many,{a_good_path}{blanks},extra",
            "ManifestError",
            "value(s) but the header has",
        ),
    }
    lines = [r for r, _, _ in bad_rows.values()]
    lines += [
        f"{long_id},{a_good_path}{blanks}",
        f"dup,{a_good_path}{blanks}",
        f"dup,{a_good_path}{blanks}",
    ]
    drill_manifest = cohort / "drill.csv"
    payload = text.rstrip("\n") + "\n" + "\n".join(lines) + "\n"
    drill_manifest.write_bytes(payload.encode("utf-8", "surrogateescape"))
    n_good = len(text.splitlines()) - 1
    yield good, drill_manifest, bad_rows, n_good
    server.close()
    (short / "s.tif").unlink(missing_ok=True)
    short.rmdir()


@pytest.mark.timeout(3 * RUN_TIMEOUT_S)
def test_a_cohort_of_every_broken_kind_finishes_with_one_row_each(
    drill, tmp_path: Path, ray_session
) -> None:
    good_manifest, drill_manifest, bad_rows, n_good = drill
    address = ray_session.get_runtime_context().gcs_address
    roots = {"clean": tmp_path / "clean", "drill": tmp_path / "drill"}
    for root in roots.values():
        root.mkdir()
        register(root, Darkness(), darkness_card("darkness", "1"))

    clean = _slidefleet(
        ["run", str(good_manifest), "--model", "darkness", "--root", str(roots["clean"])], address
    )
    assert clean.returncode == 0, clean.stderr[-3000:]
    done = _slidefleet(
        ["run", str(drill_manifest), "--model", "darkness", "--root", str(roots["drill"])], address
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr

    clean_failures = read_table(roots["clean"] / "tables", "failures").to_pylist()
    failures = read_table(roots["drill"] / "tables", "failures").to_pylist()
    input_failures = [f for f in failures if f["stage"] in ("manifest", "ingest")]
    by_id: dict[str, list[dict[str, object]]] = {}
    for failure in input_failures:
        by_id.setdefault(failure["slide_id"], []).append(failure)

    # Data rows are numbered from 1 after the header: the good rows, then the bad ones in order.
    empty_id = f"<row {n_good + list(bad_rows).index('<empty>') + 1}>"
    expected = {(empty_id if k == "<empty>" else k): v for k, v in bad_rows.items()}
    long_rows = [k for k in by_id if k.startswith("LLLL")]
    assert len(long_rows) == 1 and len(long_rows[0]) < 100  # a 10,000-character ID, shortened
    assert set(by_id) == {*expected, long_rows[0], "dup"}
    for slide_id, (_, error_type, words) in expected.items():
        (row,) = by_id[slide_id]  # exactly one row per bad row
        assert row["error_type"] == error_type, row
        assert words in row["message"], row
    (long_row,) = by_id[long_rows[0]]
    assert long_row["error_type"] == "InvalidSlideId" and len(long_row["message"]) < 600
    dups = by_id["dup"]
    assert len(dups) == 2 and len({d["message"] for d in dups}) == 2  # each names the other row
    first_dup = n_good + len(bad_rows) + 2
    assert sorted(d["message"].split(", row ")[1].split(" ")[0] for d in dups) == [
        str(first_dup),
        str(first_dup + 1),
    ]

    # The good slides: the same failures downstream (none or the same) and identical results.
    def downstream(rows: list[dict[str, object]]) -> set[tuple[object, ...]]:
        return {
            (f["stage"], f["slide_id"], f["error_type"])
            for f in rows
            if f["stage"] not in ("manifest", "ingest")
        }

    assert downstream(failures) == downstream(clean_failures)
    for table in ("slides", "regions", "thresholds"):
        assert _rows(roots["drill"], table) == _rows(roots["clean"], table), table
    assert {r["slide_id"] for r in _rows(roots["drill"], "slides")} == {
        r["slide_id"] for r in _rows(roots["clean"], "slides")
    }
    assert len({r["slide_id"] for r in _rows(roots["clean"], "slides")}) == n_good

    # Every bad row is an open failure in the view; planning a reprocess does not hang either.
    open_ids = {
        r["slide_id"]
        for r in failures_view(roots["drill"], open_only=True).to_pylist()
        if r["stage"] in ("manifest", "ingest")
    }
    assert open_ids == set(by_id)
    plan = _slidefleet(["reprocess", "--root", str(roots["drill"]), "--dry-run"])
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "refused (input not usable, fix the manifest): 6 slide(s)" in plan.stdout
