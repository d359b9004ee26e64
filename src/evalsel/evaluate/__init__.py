"""Stage 7, evaluation: multiple-choice scoring (C-Eval answer-only and lm-evaluation-harness modes) and the lm-evaluation-harness cross-check."""
