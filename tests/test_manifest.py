from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.errors import InvalidSlideId, ManifestError
from engine.ids import check_slide_id
from engine.manifest import read_manifest
from engine.store import FleetLayout


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("slide_id,path,annotation,split,mpp\n001,slides/a.svs,ann/a.xml,test,0.25\n")
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


@pytest.mark.parametrize("slide_id", ["../x", "a/b", "/abs", "..", ".hidden", "", "a" * 129, "x\\y", "a..b"])
def test_unsafe_slide_ids_are_refused(slide_id: str) -> None:
    with pytest.raises(InvalidSlideId):
        check_slide_id(slide_id)


def test_layout_never_leaves_the_root(tmp_path: Path) -> None:
    layout = FleetLayout(tmp_path)
    assert layout.slide_store("TCGA-A2-A0YE-01Z-00-DX1").parent == tmp_path.resolve() / "slides"
    with pytest.raises(InvalidSlideId):
        layout.slide_store("../../etc")
