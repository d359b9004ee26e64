"""Stage 9, the report: accuracy with intervals, paired tests, the verdict and the caveats it must carry."""
