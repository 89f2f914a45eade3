"""Shoal's processes. `kernel` is what they share; no service imports another."""
