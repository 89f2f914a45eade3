"""The scheduler: binds tasks to nodes with Swarm's filters and spread, and says why when it cannot."""
