"""API versions: the `/vX.Y/` path prefix, and refusing versions this server cannot speak.

Shoal advertises 1.41: the first version whose `GET /services?status=true` carries
`ServiceStatus`, and high enough that the CLI enables every swarm flag it has. The CLI negotiates
down to whatever `/_ping` advertises, so advertising more than is implemented would break it.
"""

from __future__ import annotations

import re

from services.api.errors import InvalidParameter

API_VERSION = "1.41"
MIN_API_VERSION = "1.12"
PREFIX = r"/v{version:\d+\.\d+}"
"""The aiohttp route prefix for versioned paths; the version is checked by `check`."""

_PREFIX_RE = re.compile(r"^/v\{version[^}]*\}")


def parse(version: str) -> tuple[int, int]:
    major, _, minor = version.partition(".")
    return int(major), int(minor or 0)


def check(version: str) -> None:
    """Refuse versions outside [MIN, MAX] with dockerd's messages (400)."""
    asked = parse(version)
    if asked > parse(API_VERSION):
        raise InvalidParameter(
            f"client version {version} is too new. Maximum supported API version is {API_VERSION}"
        )
    if asked < parse(MIN_API_VERSION):
        raise InvalidParameter(
            f"client version {version} is too old. Minimum supported API version is {MIN_API_VERSION}, "
            "please upgrade your client to a newer version"
        )


def at_least(version: str | None, minimum: str) -> bool:
    """Whether a request speaks `minimum` or later; an unversioned request speaks the newest."""
    return version is None or parse(version) >= parse(minimum)


def unversioned(template: str) -> str:
    """A route template without its version prefix, so both spellings share one metrics label."""
    return _PREFIX_RE.sub("", template) or "/"
