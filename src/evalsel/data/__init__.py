"""Stage 1, the inputs: the benchmark (C-Eval or local files) normalised, the fine-tuning pool prepared into shards, and the pool's on-disk index."""
