"""The API gateway: Docker Engine API v1.41 (swarm subset) over the event log.

Reads are answered from the gateway's own projection; writes are compare-and-set appends
followed by a wait until the projection has applied them, so a client reads its own writes.
"""
