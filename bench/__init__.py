"""Benchmarks: img/s and ratios, printed; never asserted by tests."""
