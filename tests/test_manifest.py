import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.errors import InvalidSlideId, ManifestError
from engine.ids import check_slide_id
from engine.manifest import read_manifest
from engine.store import FleetLayout


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text(
        "slide_id,path,annotation,split,mpp\n001,slides/a.svs,ann/a.xml,test,0.25\n"
    )
    manifest = read_manifest(tmp_path / "m.csv")
    (entry,) = manifest.entries
    assert entry.slide_id == "001"  # stays text, not the integer 1
    assert entry.path == tmp_path / "slides" / "a.svs"
    assert entry.annotation == tmp_path / "ann" / "a.xml"
    assert entry.split == "test"
    assert entry.mpp_override == 0.25


def test_parquet_manifest_with_extra_columns(tmp_path: Path) -> None:
    table = pa.table({"slide_id": ["s1"], "path": ["/data/s1.svs"], "site": ["A"]})
    pq.write_table(table, tmp_path / "m.parquet")
    (entry,) = read_manifest(tmp_path / "m.parquet").entries
    assert entry.path == Path("/data/s1.svs")
    assert entry.extra == {"site": "A"}


def test_missing_required_column_is_a_manifest_error(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("id,file\na,b\n")
    with pytest.raises(ManifestError, match="slide_id"):
        read_manifest(tmp_path / "m.csv")


def test_bad_rows_are_rejected_not_dropped(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text(
        "slide_id,path,split,mpp\n"
        "../escape,a.svs,,\n"
        "dup,a.svs,,\n"
        "dup,b.svs,,\n"
        "good,c.svs,,\n"
        "badsplit,d.svs,validation,\n"
        "badmpp,e.svs,,-1\n"
    )
    manifest = read_manifest(tmp_path / "m.csv")
    assert [e.slide_id for e in manifest.entries] == ["good"]
    rejected = {(r.slide_id, type(r.error).__name__) for r in manifest.rejected}
    assert ("../escape", "InvalidSlideId") in rejected
    assert sum(1 for r in manifest.rejected if r.slide_id == "dup") == 2
    assert ("badsplit", "ManifestError") in rejected
    assert ("badmpp", "ManifestError") in rejected


@pytest.mark.parametrize(
    "slide_id", ["../x", "a/b", "/abs", "..", ".hidden", "", "a" * 129, "x\\y", "a..b"]
)
def test_unsafe_slide_ids_are_refused(slide_id: str) -> None:
    with pytest.raises(InvalidSlideId):
        check_slide_id(slide_id)


def test_layout_never_leaves_the_root(tmp_path: Path) -> None:
    layout = FleetLayout(tmp_path)
    assert layout.slide_store("TCGA-A2-A0YE-01Z-00-DX1").parent == tmp_path.resolve() / "slides"
    with pytest.raises(InvalidSlideId):
        layout.slide_store("../../etc")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_bom_and_numeric_looking_ids_stay_text(tmp_path: Path) -> None:
    manifest = _write(
        tmp_path / "m.csv",
        "slide_id,path,label\n0001,a.svs,tumor\n1e5,b.svs,normal\n".encode("utf-8-sig"),
    )
    parsed = read_manifest(manifest)
    assert not parsed.rejected
    assert [(e.slide_id, e.label, e.row) for e in parsed.entries] == [
        ("0001", "tumor", 1),
        ("1e5", "normal", 2),
    ]


def test_one_bad_byte_rejects_only_its_row_with_row_and_column(tmp_path: Path) -> None:
    lines = [b"slide_id,path,label"] + [
        f"s{i:03d},s{i:03d}.svs,normal".encode() for i in range(200)
    ]
    lines[120] = b"s119,s119.svs,tum\xe9ur"  # Latin-1 in a UTF-8 file: data row 120, line 121
    parsed = read_manifest(_write(tmp_path / "m.csv", b"\n".join(lines) + b"\n"))
    assert len(parsed.entries) == 199
    (bad,) = parsed.rejected
    assert bad.slide_id == "s119" and bad.row == 120
    assert isinstance(bad.error, ManifestError)
    message = str(bad.error)
    assert "row 120 (line 121)" in message and "'label'" in message and "0xE9" in message
    assert "tum\ufffdur" in message


def test_a_bad_byte_in_the_header_is_a_manifest_error(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "m.csv", b"slide_id,path,r\xe9sultat\ns1,a.svs,x\n")
    with pytest.raises(ManifestError, match=r"header \(line 1\) is not UTF-8 text at column 3"):
        read_manifest(manifest)


def test_utf16_and_empty_manifests_are_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="UTF-16"):
        read_manifest(_write(tmp_path / "u.csv", "slide_id,path\ns1,a.svs\n".encode("utf-16")))
    with pytest.raises(ManifestError, match="empty"):
        read_manifest(_write(tmp_path / "e.csv", b""))


def test_na_nan_and_null_are_text_except_where_the_schema_cannot_hold_text(tmp_path: Path) -> None:
    manifest = _write(
        tmp_path / "m.csv",
        b"slide_id,path,label,mpp,split,site\n"
        b"NA,a.svs,NA,NA,N/A,null\n"
        b"nan,b.svs,null,nan,null,NA\n"
        b"null,c.svs,,,,\n",
    )
    parsed = read_manifest(manifest)
    assert not parsed.rejected
    by_id = {e.slide_id: e for e in parsed.entries}
    assert set(by_id) == {"NA", "nan", "null"}
    assert (
        by_id["NA"].label == "NA" and by_id["nan"].label == "null" and by_id["null"].label is None
    )
    assert all(e.mpp_override is None and e.split is None for e in parsed.entries)
    assert by_id["NA"].extra == {"site": "null"} and by_id["null"].extra == {"site": None}


def test_empty_and_duplicate_ids_name_their_rows(tmp_path: Path) -> None:
    manifest = _write(
        tmp_path / "m.csv", b"slide_id,path\ndup,a.svs\n,b.svs\ngood,c.svs\ndup,d.svs\ndup,e.svs\n"
    )
    parsed = read_manifest(manifest)
    assert [e.slide_id for e in parsed.entries] == ["good"]
    messages = {r.row: (r.slide_id, str(r.error)) for r in parsed.rejected}
    assert messages[2][0] == "<row 2>" and "row 2 (line 3): empty slide_id" in messages[2][1]
    assert "row 1 (line 2)" in messages[1][1] and "also on row(s) 4, 5" in messages[1][1]
    assert "also on row(s) 1, 5" in messages[4][1] and "also on row(s) 1, 4" in messages[5][1]
    assert len({m for _, m in messages.values()}) == 4  # no two identical rows


def test_a_very_long_id_is_not_echoed_whole(tmp_path: Path) -> None:
    long_id = "x" * 10_000
    manifest = _write(tmp_path / "m.csv", f"slide_id,path\n{long_id},a.svs\nok,b.svs\n".encode())
    parsed = read_manifest(manifest)
    assert [e.slide_id for e in parsed.entries] == ["ok"]
    (bad,) = parsed.rejected
    assert isinstance(bad.error, InvalidSlideId)
    assert len(str(bad.error)) < 500 and "10,000 characters" in str(bad.error)
    assert len(bad.slide_id) < 100


def test_a_row_with_too_many_cells_is_rejected_alone(tmp_path: Path) -> None:
    manifest = _write(
        tmp_path / "m.csv", b"slide_id,path,label\ns1,a.svs,tumor, left\ns2,b.svs,normal\n"
    )
    parsed = read_manifest(manifest)
    assert [e.slide_id for e in parsed.entries] == ["s2"]
    (bad,) = parsed.rejected
    assert bad.slide_id == "s1" and "has 4 value(s) but the header has 3" in str(bad.error)


def test_a_manifest_that_is_not_a_regular_file_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "m.csv"
    os.mkfifo(fifo)  # opening it for reading would block forever
    with pytest.raises(ManifestError, match="not a regular file"):
        read_manifest(fifo)
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(ManifestError, match="not a regular file"):
        read_manifest(tmp_path / "d.csv")
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "missing.csv")


def test_parquet_integer_ids_become_text(tmp_path: Path) -> None:
    pq.write_table(
        pa.table({"slide_id": [1, 2], "path": ["a.svs", "b.svs"], "mpp": [0.5, None]}),
        tmp_path / "m.parquet",
    )
    parsed = read_manifest(tmp_path / "m.parquet")
    assert [(e.slide_id, e.mpp_override) for e in parsed.entries] == [("1", 0.5), ("2", None)]
