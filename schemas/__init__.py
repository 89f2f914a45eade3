"""The contract between Shoal's processes: Docker-shaped objects, task states and the event catalogue.

Nothing here imports from `services`; everything else depends on this package.
"""
