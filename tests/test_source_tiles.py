"""Native levels kept as the slide's own JPEG tiles: the same bytes, OpenSlide's pixels, fewer bytes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pytest
import tifffile
import zarr

from engine.errors import SlideUnreadable
from engine.infer import infer
from engine.ingest import IngestParams, convert_slide
from engine.ingest.cohort import ingest
from engine.ingest.source_tiles import decode_planar, scan_defect, standalone_jpeg
from engine.manifest import SlideEntry, read_manifest
from engine.slides import open_slide
from engine.store import FleetLayout
from engine.store.slide_store import COVERAGE_GROUP
from tests.conftest import CMU_SMALL, shared_slide
from tests.infer_models import Darkness, darkness_card, register

_JFIF_APP0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"


def _manifest(folder: Path, rows: list[tuple[str, Path, float | None]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["slide_id,path,mpp"] + [f"{sid},{p},{'' if m is None else m}" for sid, p, m in rows]
    path = folder / "manifest.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _store(result_path: str) -> zarr.Group:
    return zarr.open_group(result_path, mode="r")


def _level_tiles(slide: Path, level_dims: tuple[int, int]) -> tuple[tifffile.TiffPage, list[bytes]]:
    """The TIFF page with these dimensions and its raw tiles, read by tifffile (not our code)."""
    with tifffile.TiffFile(slide) as tif:
        (page,) = [
            p for p in tif.pages if p.is_tiled and (p.imagewidth, p.imagelength) == level_dims
        ]
        fh = tif.filehandle
        raw = []
        for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
            fh.seek(offset)
            raw.append(fh.read(count))
        return page, raw


def _synthetic_slide(tmp_path: Path, **options: Any) -> SlideEntry:
    """The one slide of a synthetic cohort written with ``generate_cohort(**options)``."""
    from engine.synth import generate_cohort

    (entry,) = read_manifest(generate_cohort(tmp_path / "cohort", 1, **options)).entries
    return entry


def _written(group: zarr.Group, path: str) -> np.ndarray:
    array = group[path]
    chunk = array.chunks[-1]
    if f"{COVERAGE_GROUP}/{path}" not in group:
        return np.ones(array.shape[1:], bool)
    grid = np.asarray(group[f"{COVERAGE_GROUP}/{path}"][:]).astype(bool)
    return np.kron(grid, np.ones((chunk, chunk), bool))[: array.shape[1], : array.shape[2]]


def test_a_tiff_tile_becomes_a_jpeg_any_decoder_reads_as_the_tiff_says() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    # A JPEG of RGB components (no colour transform) that carries a JFIF marker: a decoder
    # trusting the marker would convert it from YCbCr. The TIFF says RGB: the chunk must too.
    stream = imagecodecs.jpeg8_encode(rgb, level=95, colorspace="RGB", outcolorspace="RGB")
    plain = bytes(stream)
    expected = imagecodecs.jpeg8_decode(plain, colorspace="RGB")
    with_jfif = plain[:2] + _JFIF_APP0 + plain[2:]
    fixed = standalone_jpeg(with_jfif, None, adobe_transform=0)
    assert b"JFIF" not in fixed and fixed.count(b"Adobe") == 1
    np.testing.assert_array_equal(decode_planar(fixed), expected.transpose(2, 0, 1))
    # Tables in a separate stream (TIFF JPEGTables) are put in front of an abbreviated tile.
    tables_end = plain.index(b"\xff\xda")
    tables = plain[:tables_end] + b"\xff\xd9"
    abbreviated = b"\xff\xd8" + plain[tables_end:]
    np.testing.assert_array_equal(
        decode_planar(standalone_jpeg(abbreviated, tables, 0)), expected.transpose(2, 0, 1)
    )


def test_aperio_tiles_are_stored_byte_for_byte_and_read_as_openslide_reads_them(
    tmp_path: Path,
) -> None:
    (entry,) = read_manifest(_manifest(tmp_path, [("cmu", CMU_SMALL, None)])).entries
    params = IngestParams(sparse_margin_um=0.0)  # glass around the tissue strip stays unwritten
    result = convert_slide(entry, FleetLayout(tmp_path / "root"), params)
    group = _store(result.store_path)
    level0 = group["0"]
    meta = group.attrs["slidefleet"]
    assert meta["levels"][0]["chunks"] == "source-jpeg"
    page, raw = _level_tiles(CMU_SMALL, (2220, 2967))
    assert level0.chunks == (3, page.tilelength, page.tilelength) == (3, 240, 240)
    assert level0.metadata.to_dict()["codecs"][0]["configuration"] == {"source_tiles": True}
    # Every chunk file is the source tile with the tables in front and an Adobe marker: the
    # source's entropy-coded data unchanged.
    columns = -(-page.imagewidth // page.tilewidth)
    chunk_files = sorted((Path(result.store_path) / "0" / "c" / "0").rglob("*"))
    chunk_files = [p for p in chunk_files if p.is_file()]
    coverage = np.asarray(group[f"{COVERAGE_GROUP}/0"][:]).astype(bool)
    assert len(chunk_files) == int(coverage.sum()) and 0 < coverage.mean() < 1
    for path in chunk_files:
        row, col = int(path.parent.name), int(path.name)
        tile = raw[row * columns + col]
        scan = tile.index(b"\xff\xda")
        assert path.read_bytes().endswith(tile[scan:])
    # Pixels: exactly OpenSlide's inside the written chunks, white glass elsewhere.
    pixels = np.asarray(level0[:])
    written = _written(group, "0")
    with open_slide(CMU_SMALL) as slide:
        expected = slide.read_region_planar(0, 0, 0, 2220, 2967)
    np.testing.assert_array_equal(pixels[:, written], expected[:, written])
    assert (pixels[:, ~written] == 255).all()
    # ome-zarr-py reads those pixels too (the codec is registered through its entry point).
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    (image_node, *_) = Reader(parse_url(result.store_path))()
    np.testing.assert_array_equal(np.asarray(image_node.data[0][:].compute()), pixels)
    # Bytes: the written tiles' own bytes plus the tables and a marker each, no more.
    level0_bytes = sum(p.stat().st_size for p in chunk_files)
    source_bytes = sum(len(raw[int(p.parent.name) * columns + int(p.name)]) for p in chunk_files)
    assert (
        source_bytes < level0_bytes <= source_bytes + len(chunk_files) * (len(page.jpegtables) + 16)
    )
    assert meta["levels"][0]["source_tiles"]["tiles_written"] == len(chunk_files)
    # The slide's one level is decoded once, to build the complete tissue level; the level
    # above it is kept from that pass (pruned), not computed by decoding the copied tiles again.
    # (Plus the three tiles decoded to check the tiling against OpenSlide.)
    assert meta["decoded_megapixels"] <= (2220 * 2967 + 3 * 240**2) / 1e6
    # Coarser levels are averaged from those pixels: the same as a store that re-encodes level 0.
    reencoded = convert_slide(
        entry, FleetLayout(tmp_path / "zstd"), params.model_copy(update={"source_tiles": False})
    )
    other = _store(reencoded.store_path)
    assert other["0"].chunks == (3, 512, 512)
    for level in meta["levels"][1:]:
        path = level["path"]
        inside = _written(group, path) & _written(other, path)
        np.testing.assert_array_equal(
            np.asarray(group[path][:])[:, inside], np.asarray(other[path][:])[:, inside]
        )


@pytest.mark.parametrize("colour_space", ["rgb", "ycbcr"])
def test_every_native_level_of_a_pyramidal_tiff_keeps_its_tiles(
    tmp_path: Path, colour_space: str
) -> None:
    entry = _synthetic_slide(
        tmp_path,
        seed=3,
        width_px=2048,
        height_px=2048,
        tissue_fraction=0.35,
        colour_space=colour_space,
    )
    sparse = convert_slide(entry, FleetLayout(tmp_path / "sparse"), IngestParams())
    full = convert_slide(entry, FleetLayout(tmp_path / "full"), IngestParams(sparse=False))
    group, whole = _store(sparse.store_path), _store(full.store_path)
    levels = group.attrs["slidefleet"]["levels"]
    native = [level for level in levels if level["native_level"] is not None]
    assert len(native) > 1 and all(level["chunks"] == "source-jpeg" for level in native)
    with open_slide(entry.path) as slide:
        for level in native:
            path = level["path"]
            array = whole[path]
            height, width = array.shape[1:]
            expected = slide.read_region_planar(0, 0, level["native_level"], width, height)
            np.testing.assert_array_equal(np.asarray(array[:]), expected)
            written = _written(group, path)
            np.testing.assert_array_equal(
                np.asarray(group[path][:])[:, written], expected[:, written]
            )
    # Nothing was decoded from the slide but three tiles a level, checked against OpenSlide.
    assert group.attrs["slidefleet"]["decoded_megapixels"] <= 3 * len(native) * 256**2 / 1e6
    # Each native level holds at most its page's bytes, plus one 16-byte colour marker a tile.
    with tifffile.TiffFile(entry.path) as tif:
        for level in native:
            page = tif.pages[level["source_tiles"]["page"]]
            files = [p for p in (Path(sparse.store_path) / level["path"]).rglob("*") if p.is_file()]
            chunk_bytes = sum(p.stat().st_size for p in files if p.name != "zarr.json")
            tiles = level["source_tiles"]["tiles_written"]
            assert chunk_bytes == level["source_tiles"]["bytes_written"]
            assert chunk_bytes <= sum(page.databytecounts) + 16 * tiles


def test_levels_openslide_does_not_read_as_plain_jpeg_tiles_are_decoded(tmp_path: Path) -> None:
    # A grey JPEG TIFF: OpenSlide expands it to RGB, so its tiles are not the store's pixels.
    slide = shared_slide("large_image/test_orient6.tif")
    (entry,) = read_manifest(_manifest(tmp_path, [("grey", slide, 0.5)])).entries
    result = convert_slide(entry, FleetLayout(tmp_path / "root"), IngestParams())
    group = _store(result.store_path)
    assert all(level["chunks"] == "zstd" for level in group.attrs["slidefleet"]["levels"])
    assert group["0"].metadata.to_dict()["codecs"][-1]["name"] == "zstd"
    with open_slide(slide, mpp_override=0.5) as reader:
        np.testing.assert_array_equal(
            np.asarray(group["0"][:]), reader.read_region_planar(0, 0, 0, 120, 180)
        )


def test_a_store_of_source_tiles_is_read_in_a_fresh_process_and_scores_the_same(
    tmp_path: Path, ray_session
) -> None:
    manifest = _manifest(tmp_path / "manifest", [("cmu", CMU_SMALL, None)])
    predictions = {}
    for name in ("tiles", "zstd"):
        root = tmp_path / name
        ingest(manifest, root, params=IngestParams(source_tiles=name == "tiles"), progress=False)
        model = register(root, Darkness(), darkness_card("darkness"))
        report = infer(root, model.ref, progress=False)
        assert not report.failures and report.tiles > 0
        (pred,) = (root / "predictions" / model.model_id).glob("*.zarr")
        predictions[name] = np.asarray(zarr.open_group(pred, mode="r")["0"][:])
    np.testing.assert_array_equal(predictions["tiles"], predictions["zstd"])
    (store,) = (tmp_path / "tiles" / "slides").glob("*.ome.zarr")
    level0 = store / "0"
    assert zarr.open_array(level0, mode="r").metadata.to_dict()["codecs"][0]["name"] == (
        "slidefleet.jpeg"
    )
    code = (
        "import sys, numpy as np, zarr, engine.store; "
        "print(np.asarray(zarr.open_array(sys.argv[1], mode='r')[:]).astype(np.int64).sum())"
    )
    total = subprocess.run(
        [sys.executable, "-c", code, str(level0)], check=True, capture_output=True, text=True
    ).stdout
    assert int(total) == np.asarray(zarr.open_array(level0, mode="r")[:]).astype(np.int64).sum()
    with pytest.raises(ValueError, match="own JPEG tiles"):
        zarr.open_array(level0, mode="r+")[:, :16, :16] = 0


def test_a_scanner_like_pyramid_is_stored_in_its_own_tiles(tmp_path: Path) -> None:
    # As Aperio scanners write: YCbCr 4:2:0 JPEG tiles, native levels 1x, 4x, 16x only. The
    # store keeps the slide's own levels (NGFF scales need not be powers of two), so every
    # level is the slide's own tiles: no pixel decoded but the check tiles.
    entry = _synthetic_slide(
        tmp_path,
        seed=5,
        width_px=4096,
        height_px=4096,
        tissue_fraction=0.25,
        colour_space="ycbcr",
        level_step=4,
    )
    with open_slide(entry.path) as slide:
        assert [round(d) for d in slide.info.level_downsamples] == [1, 4, 16]
    default = convert_slide(entry, FleetLayout(tmp_path / "default"), IngestParams())
    full = convert_slide(
        entry, FleetLayout(tmp_path / "full"), IngestParams(sparse=False, source_tiles=False)
    )
    group, whole = _store(default.store_path), _store(full.store_path)
    levels = group.attrs["slidefleet"]["levels"]
    assert [level["chunks"] for level in levels] == ["source-jpeg"] * 3
    assert [level["native_level"] for level in levels] == [0, 1, 2]
    # Every written chunk of every level equals the full store that decodes and re-encodes all.
    for level in levels:
        path = level["path"]
        written = _written(group, path)
        assert written.any()
        np.testing.assert_array_equal(
            np.asarray(group[path][:])[:, written], np.asarray(whole[path][:])[:, written]
        )
    assert group.attrs["slidefleet"]["decoded_megapixels"] <= 3 * 3 * 256**2 / 1e6
    # The store is no larger than the slide: its tiles, minus the glass, plus the labels.
    store_bytes = sum(p.stat().st_size for p in Path(default.store_path).rglob("*") if p.is_file())
    assert store_bytes <= entry.path.stat().st_size


def _corrupt(slide: Path, out: Path, damage: str) -> tuple[Path, int, int]:
    """A copy of ``slide`` with one level-0 tile in the tissue damaged; returns (path, row, col)."""
    with tifffile.TiffFile(slide) as tif:
        page = tif.pages[0]
        offsets, counts = page.dataoffsets, page.databytecounts
        columns = -(-page.imagewidth // page.tilewidth)
    data = bytearray(slide.read_bytes())
    index = max(range(len(counts)), key=lambda i: counts[i])  # the busiest tile: tissue
    start, count = offsets[index], counts[index]
    scan = bytes(data[start : start + count]).index(b"\xff\xda")
    if damage == "header":  # as openslide-python's unreadable.svs: SOS overwritten by DQT
        data[start + scan + 1] = 0xDB
    elif damage == "marker":  # an invalid marker inside the compressed data
        data[start + scan + 200 : start + scan + 202] = b"\xff\x12"
    else:  # the second half of the tile zeroed, as a partly written file
        data[start + count // 2 : start + count] = bytes(count - count // 2)
    out.write_bytes(bytes(data))
    return out, *divmod(index, columns)


def test_a_corrupt_source_tile_fails_the_slide_with_openslides_reason(tmp_path: Path) -> None:
    # libjpeg only warns on most damaged tiles and decodes grey; OpenSlide refuses them. A copied
    # tile is checked, so the slide fails as a decoding conversion would, and no store is left.
    healthy = _synthetic_slide(tmp_path, seed=3, width_px=2048, height_px=2048, tissue_fraction=0.6)
    expected = {
        "header": "Bogus marker length",
        "marker": "Corrupt JPEG data",
        "truncated": "Premature end of JPEG file",
    }
    rows = [("healthy", healthy.path, None)]
    for damage in expected:
        path, row, col = _corrupt(healthy.path, tmp_path / f"{damage}.tif", damage)
        rows.append((damage, path, None))
        with open_slide(path) as slide, pytest.raises(Exception, match=expected[damage]):
            slide.read_region_planar(col * 256, row * 256, 0, 256, 256)
    report = ingest(_manifest(tmp_path, rows), tmp_path / "root", progress=False)
    failed = {f.slide_id: f for f in report.failures}
    assert set(failed) == set(expected)
    for damage, reason in expected.items():
        assert failed[damage].error_type == "SlideUnreadable"
        assert reason in failed[damage].message and "level 0" in failed[damage].message
        assert not (tmp_path / "root" / "slides" / f"{damage}.ome.zarr").exists()
    store = _store(str(tmp_path / "root" / "slides" / "healthy.ome.zarr"))
    assert store.attrs["slidefleet"]["levels"][0]["chunks"] == "source-jpeg"


def test_scan_defect_accepts_sound_tiles_and_names_what_is_broken() -> None:
    page, raw = _level_tiles(CMU_SMALL, (2220, 2967))
    tiles = [standalone_jpeg(tile, page.jpegtables, 0) for tile in raw]
    assert all(scan_defect(tile, 240) is None for tile in tiles)
    tile = tiles[len(tiles) // 2]
    assert "end-of-image" in str(scan_defect(tile[:-100], 240))
    scan = tile.index(b"\xff\xda")
    broken = tile[: scan + 300] + b"\xff\x12" + tile[scan + 302 :]
    assert "0xFF12" in str(scan_defect(broken, 240))
    restart = tile[: scan + 300] + b"\xff\xd3" + tile[scan + 302 :]  # a restart marker is fine
    assert scan_defect(restart, 240) is None
    frame = tile.index(b"\xff\xc0")  # a frame header that disagrees with the TIFF's tile size
    resized = tile[: frame + 5] + (120).to_bytes(2, "big") + tile[frame + 7 :]
    assert "240x120 px" in str(scan_defect(resized, 240))


def test_a_level_at_a_fractional_downsample_is_decoded_not_copied(tmp_path: Path) -> None:
    # 3001 x 2999 px with 4x levels: level 1 is 751 x 750, 3.996 / 3.999 of level 0. OpenSlide
    # reads it at sub-pixel offsets (interpolated), so its tiles are not what it returns.
    from engine.ingest.source_tiles import find_source_tiles

    entry = _synthetic_slide(tmp_path, seed=5, width_px=3001, height_px=2999, level_step=4)
    with open_slide(entry.path) as slide:
        assert len(slide.info.level_dimensions_px) == 3
        assert sorted(find_source_tiles(slide)) == [0]
    result = convert_slide(entry, FleetLayout(tmp_path / "root"), IngestParams())
    levels = _store(result.store_path).attrs["slidefleet"]["levels"]
    assert [level["chunks"] for level in levels[:3]] == ["source-jpeg", "zstd", "zstd"]


def test_verify_source_tiles_openslide_fails_damage_that_keeps_the_jpeg_structure(
    tmp_path: Path,
) -> None:
    # A flipped byte inside the compressed data (making no marker) passes the structural check;
    # libjpeg decodes it with a warning, OpenSlide refuses some such tiles. The strict mode
    # decodes every copied tile through OpenSlide and fails the slide there.
    healthy = _synthetic_slide(tmp_path, seed=3, width_px=1024, height_px=1024, tissue_fraction=0.6)
    with tifffile.TiffFile(healthy.path) as tif:
        page = tif.pages[0]
        offsets, counts = page.dataoffsets, page.databytecounts
        tables, columns = page.jpegtables, -(-page.imagewidth // page.tilewidth)
    index = max(range(len(counts)), key=lambda i: counts[i])
    row, col = divmod(index, columns)
    data = healthy.path.read_bytes()
    tile = data[offsets[index] : offsets[index] + counts[index]]
    damaged_path = tmp_path / "damaged.tif"
    for position in range(tile.index(b"\xff\xda") + 40, len(tile) - 8, 97):
        if 0xFF in (tile[position], tile[position] ^ 0x5A):
            continue
        flipped = bytearray(data)
        flipped[offsets[index] + position] ^= 0x5A
        damaged_path.write_bytes(bytes(flipped))
        damaged = bytes(flipped[offsets[index] : offsets[index] + counts[index]])
        if scan_defect(standalone_jpeg(damaged, tables, 0), 256) is not None:
            continue
        with open_slide(damaged_path) as slide:
            try:
                slide.read_region_planar(col * 256, row * 256, 0, 256, 256)
            except Exception:  # noqa: BLE001 - OpenSlide refuses this one: the case wanted
                break
    else:
        pytest.fail("no byte flip that OpenSlide refuses and the structure check passes")
    (entry,) = read_manifest(_manifest(tmp_path, [("damaged", damaged_path, None)])).entries
    strict = IngestParams(verify_source_tiles="openslide")
    with pytest.raises(SlideUnreadable, match="Corrupt JPEG data|Premature end"):
        convert_slide(entry, FleetLayout(tmp_path / "strict"), strict)
    assert not list((tmp_path / "strict" / "slides").glob("*.ome.zarr"))
    # On a sound slide the strict mode stores the same bytes, and says what it checked.
    default = convert_slide(healthy, FleetLayout(tmp_path / "default"), IngestParams())
    checked = convert_slide(healthy, FleetLayout(tmp_path / "checked"), strict)
    assert IngestParams().output_hash() == strict.output_hash()
    for result, verified in ((default, "structure"), (checked, "openslide")):
        level0 = _store(result.store_path).attrs["slidefleet"]["levels"][0]
        assert level0["source_tiles"]["verified"] == verified
    files = sorted(
        p.relative_to(default.store_path) for p in Path(default.store_path).rglob("*/c/*/*/*")
    )
    assert files and files == sorted(
        p.relative_to(checked.store_path) for p in Path(checked.store_path).rglob("*/c/*/*/*")
    )
    for relative in files:
        if (Path(default.store_path) / relative).is_file():
            assert (Path(default.store_path) / relative).read_bytes() == (
                Path(checked.store_path) / relative
            ).read_bytes()
