"""Reusable Flax Linen layers shared by the models (e.g. CBAM attention)."""
