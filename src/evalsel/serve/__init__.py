"""Serving a trained arm: an OpenAI-compatible chat server."""
