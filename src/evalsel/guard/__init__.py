"""Stage 3, the contamination guard: exact, near-duplicate and n-gram leaks of scored questions into selected or training data, each drop counted with its reason."""
