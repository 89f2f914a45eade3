"""The `shoal` command: one entry point for the local launcher and every Shoal process."""
