"""Detection as calibrated statistics: null models, block tests, cohorts, error-budget verdicts."""
