"""engine.tables: part files hold no partition key; readers give the declared schema back."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.tables import (
    TABLE_PARTITIONS,
    TABLE_SCHEMAS,
    FailureRecord,
    file_schema,
    read_part,
    read_table,
    write_failures,
    write_table_part,
)
from engine.tables.writer import TableSchemaError


def _region(slide_id: str, model_id: str, region_id: int) -> dict[str, object]:
    return {
        "slide_id": slide_id,
        "model_id": model_id,
        "params_hash": "p" * 16,
        "region_id": region_id,
        "area_px": 4,
        "area_um2": 256.0,
        "centroid_x_level0_px": 10.0,
        "centroid_y_level0_px": 12.0,
        "bbox_x0_level0_px": 0.0,
        "bbox_y0_level0_px": 0.0,
        "bbox_x1_level0_px": 32.0,
        "bbox_y1_level0_px": 32.0,
        "mean_score": 0.9,
        "max_score": 0.99,
    }


def test_every_table_declares_partition_keys_that_are_string_columns() -> None:
    assert set(TABLE_PARTITIONS) == set(TABLE_SCHEMAS)
    for name, keys in TABLE_PARTITIONS.items():
        for key in keys:
            assert TABLE_SCHEMAS[name].field(key).type == pa.string(), (name, key)
            assert key not in file_schema(name).names


def test_partition_key_is_in_the_directory_only_and_read_back_as_declared(tmp_path: Path) -> None:
    # A model_id of digits only: hive discovery alone would type it as an integer.
    rows_a = [_region("s1", "0123456789", 1), _region("s1", "0123456789", 2)]
    rows_b = [_region("s2", "abcdef", 1)]
    part_a = write_table_part(
        tmp_path, "regions", rows_a, partition={"model_id": "0123456789"}, run_id="r1"
    )
    part_b = write_table_part(
        tmp_path, "regions", rows_b, partition={"model_id": "abcdef"}, run_id="r2"
    )
    assert part_a is not None and part_b is not None
    assert part_a.parent.name == "model_id=0123456789"
    assert "model_id" not in pq.read_schema(part_a).names

    table = read_table(tmp_path, "regions")
    assert table.schema.equals(TABLE_SCHEMAS["regions"], check_metadata=False)
    assert sorted(table["model_id"].to_pylist()) == ["0123456789", "0123456789", "abcdef"]
    one = read_part(part_a, "regions")
    assert one.schema.equals(TABLE_SCHEMAS["regions"], check_metadata=False)
    assert one["model_id"].to_pylist() == ["0123456789"] * 2
    assert one["region_id"].to_pylist() == [1, 2]

    frame = pd.read_parquet(tmp_path / "regions")  # pandas' defaults
    assert len(frame) == 3
    assert list(frame.columns).count("model_id") == 1
    assert sorted(frame["model_id"].astype(str)) == ["0123456789", "0123456789", "abcdef"]


def test_failures_partitioned_by_stage_read_with_pandas_defaults(tmp_path: Path) -> None:
    failures = [
        FailureRecord("ingest", "s1", "MissingMpp", "no mpp"),
        FailureRecord("post", "s2", "PredictionMissing", "run infer", model_id="m"),
    ]
    write_failures(tmp_path, failures, run_id="r1")
    frame = pd.read_parquet(tmp_path / "failures")
    assert sorted(zip(frame["stage"].astype(str), frame["slide_id"], strict=True)) == [
        ("ingest", "s1"),
        ("post", "s2"),
    ]
    assert read_table(tmp_path, "failures").num_rows == 2


def test_parts_written_with_the_key_inside_are_still_read(tmp_path: Path) -> None:
    # A fleet written before partition keys left the files.
    legacy_dir = tmp_path / "regions" / "model_id=m1"
    legacy_dir.mkdir(parents=True)
    legacy = pa.Table.from_pylist(
        [
            {
                **_region("s1", "m1", 1),
                "run_id": "r0",
                "engine_version": "0",
                "written_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            }
        ],
        schema=TABLE_SCHEMAS["regions"],
    )
    pq.write_table(legacy, legacy_dir / "part-r0-old.parquet")
    write_table_part(
        tmp_path, "regions", [_region("s2", "m2", 1)], partition={"model_id": "m2"}, run_id="r1"
    )
    table = read_table(tmp_path, "regions")
    assert sorted(
        zip(table["slide_id"].to_pylist(), table["model_id"].to_pylist(), strict=True)
    ) == [
        ("s1", "m1"),
        ("s2", "m2"),
    ]
    assert read_part(legacy_dir / "part-r0-old.parquet", "regions")["model_id"].to_pylist() == [
        "m1"
    ]


def test_partition_must_name_the_declared_keys_and_agree_with_rows(tmp_path: Path) -> None:
    rows = [_region("s1", "m1", 1)]
    with pytest.raises(TableSchemaError, match="partitioned by"):
        write_table_part(tmp_path, "regions", rows, run_id="r1")
    with pytest.raises(TableSchemaError, match="partitioned by"):
        write_table_part(tmp_path, "regions", rows, partition={"slide_id": "s1"}, run_id="r1")
    with pytest.raises(TableSchemaError, match="disagrees"):
        write_table_part(tmp_path, "regions", rows, partition={"model_id": "m2"}, run_id="r1")
    with pytest.raises(TableSchemaError, match="directory name"):
        write_table_part(tmp_path, "regions", rows, partition={"model_id": "../m1"}, run_id="r1")
    assert not (tmp_path / "regions").exists()


def test_per_class_columns_of_two_models_are_read_back(tmp_path: Path) -> None:
    """tables/tiles carries one prob_<class> column per class of its model: read_table and
    read_part give them back (null for a model without that class), not the fixed columns alone."""
    from engine.tables.slide_level_schemas import with_class_columns

    def tile(slide_id: str, model_id: str, probs: dict[str, float]) -> dict[str, object]:
        return {
            "slide_id": slide_id,
            "model_id": model_id,
            "row": 0,
            "col": 1,
            "x": 224,
            "y": 0,
            "width": 224,
            "height": 224,
            "tissue_fraction": 0.5,
            **{f"prob_{name}": value for name, value in probs.items()},
        }

    base = TABLE_SCHEMAS["tiles"]
    part_a = write_table_part(
        tmp_path,
        "tiles",
        [tile("s1", "mA", {"normal": 0.25, "tumour": 0.75})],
        partition={"model_id": "mA"},
        run_id="r1",
        schema=with_class_columns(base, ["normal", "tumour"]),
    )
    write_table_part(
        tmp_path,
        "tiles",
        [tile("s1", "mB", {"stroma": 0.5, "tumour": 0.5})],
        partition={"model_id": "mB"},
        run_id="r2",
        schema=with_class_columns(base, ["stroma", "tumour"]),
    )
    table = read_table(tmp_path, "tiles")
    assert set(base.names) < set(table.column_names)
    assert {"prob_normal", "prob_tumour", "prob_stroma"} <= set(table.column_names)
    by_model = {row["model_id"]: row for row in table.to_pylist()}
    assert by_model["mA"]["prob_tumour"] == 0.75 and by_model["mA"]["prob_normal"] == 0.25
    assert by_model["mA"]["prob_stroma"] is None
    assert by_model["mB"]["prob_stroma"] == 0.5 and by_model["mB"]["prob_normal"] is None
    assert part_a is not None
    one = read_part(part_a, "tiles")
    assert one["prob_tumour"].to_pylist() == [0.75] and "prob_stroma" not in one.column_names
