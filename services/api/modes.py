"""The four service modes by the names Docker uses in filters and the CLI's MODE column."""

from __future__ import annotations

from schemas.service import ServiceMode, ServiceSpec

REPLICATED = "replicated"
GLOBAL = "global"
REPLICATED_JOB = "replicated-job"
GLOBAL_JOB = "global-job"
ALL = frozenset({REPLICATED, GLOBAL, REPLICATED_JOB, GLOBAL_JOB})


def mode_name(spec: ServiceSpec) -> str:
    """Which mode a stored (normalized) spec has; a spec without a mode is replicated."""
    mode = spec.mode
    if mode is None:
        return REPLICATED
    if mode.global_ is not None:
        return GLOBAL
    if mode.replicated_job is not None:
        return REPLICATED_JOB
    if mode.global_job is not None:
        return GLOBAL_JOB
    return REPLICATED


def set_modes(mode: ServiceMode | None) -> list[str]:
    """Every mode a spec as sent sets: none means the default (replicated), several are invalid."""
    if mode is None:
        return []
    present = (
        (REPLICATED, mode.replicated),
        (GLOBAL, mode.global_),
        (REPLICATED_JOB, mode.replicated_job),
        (GLOBAL_JOB, mode.global_job),
    )
    return [name for name, value in present if value is not None]
