"""The shared kernel: event log client, the fold, projections, telemetry and process plumbing."""
