"""Experiment configs: one file per model x dataset, `get_config(arg)`."""
