"""Stage 4, selection: the arms' strategies (cosine or RDS+ recall over similarity kernels, DSIR, a listed set, random) resolved from the config."""
