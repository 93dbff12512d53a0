"""Slide-level evaluation of score maps: slide AUC from a map's maximum and lesion FROC.

``engine.evaluate.maps.evaluate_maps`` runs it on Ray; ``engine.evaluate.params`` holds its
parameters (imported by the job config without Ray).
"""
