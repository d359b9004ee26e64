"""Eval-driven data selection: recall benchmark-like samples from a fine-tuning pool, train, and prove the gain."""

__version__ = "0.1.0"
