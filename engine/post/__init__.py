"""Post-processing: cohort-wide normalisation, thresholds, morphology, components, metrics."""
