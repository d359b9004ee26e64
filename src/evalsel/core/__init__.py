"""Shared by every stage: strict file I/O and logging, benchmark records, texts, vectors on disk, numeric precision, GPU assignment, chat prompts, model folders, hub files."""
