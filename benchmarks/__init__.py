"""Benchmarks that print figures; compared as ratios within one run, never asserted in tests."""
