"""The orchestrator: turns services (desired state) into tasks, and heartbeats into node liveness."""
