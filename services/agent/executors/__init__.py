"""Executor implementations: `process` (local processes) and `sim` (simulated tasks)."""
