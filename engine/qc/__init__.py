"""Cohort QC: slide quality (HistoQC-like measures), annotation quality and cohort flags.

Pure compute here (``slide_quality``, ``annotation_quality``, ``cohort_flags``); no Ray, Dask or
zarr is imported by these modules.
"""
