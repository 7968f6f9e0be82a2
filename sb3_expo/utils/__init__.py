"""Utilities that are not about RL: ``atomic_io.py`` (atomic file writes)."""
