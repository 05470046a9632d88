"""Reusable console widgets built on Textual's Line API (one widget per module)."""
