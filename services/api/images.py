"""Image references, checked the way Docker's reference grammar accepts them.

The grammar is applied piece by piece with unambiguous patterns (every repetition is anchored on a
separator), so a hostile reference cannot make the check backtrack exponentially.
"""

from __future__ import annotations

import re

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_{1,2}|-+)[a-z0-9]+)*")
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
MAX_NAME = 255


def valid_reference(ref: str) -> bool:
    name, at, digest = ref.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        return False
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.fullmatch(tag):
            return False
    return 0 < len(name) <= MAX_NAME and _valid_name(name)


def _valid_name(name: str) -> bool:
    parts = name.split("/")
    if len(parts) > 1 and _is_domain(parts[0]):
        if not _DOMAIN.fullmatch(parts[0]):
            return False
        parts = parts[1:]
    return all(_COMPONENT.fullmatch(p) for p in parts)


def _is_domain(first: str) -> bool:
    """Docker's rule: the first component is a registry if it has a dot or a port, or is localhost."""
    return "." in first or ":" in first or first == "localhost" or first != first.lower()
