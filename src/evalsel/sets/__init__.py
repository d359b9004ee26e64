"""Stage 5, SFT sets: each arm's selected samples (plus the random mix) guarded and written as training files, and how the arms' sets overlap."""
