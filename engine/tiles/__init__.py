"""Per-tile outputs: ``tables/tiles`` and tile-level QuPath GeoJSON (``slidefleet tiles``)."""
