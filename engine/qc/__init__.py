"""Cohort QC: slide quality (HistoQC-like measures), annotation quality and cohort flags.

``slide_quality``, ``annotation_quality`` and ``cohort_flags`` are pure compute (no Ray, Dask or
zarr); ``slide_task`` reads one store, ``stage`` runs the cohort on Ray and writes ``tables/qc``.
"""
