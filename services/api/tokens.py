"""Join tokens in Swarm's format: `SWMTKN-1-<digest>-<secret>`.

In Swarm the digest part pins the root CA, so both roles' tokens share it and rotation changes
only the secret. Shoal has no CA of its own, so the digest is derived from the cluster id: it is
stable for the cluster's life and still lets an agent reject a token for another cluster early.
"""

from __future__ import annotations

import hashlib
import os

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
DIGEST_CHARS = 50
SECRET_CHARS = 25


def _base36(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 36)
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


def cluster_digest(cluster_id: str) -> str:
    return _base36(int.from_bytes(hashlib.sha256(cluster_id.encode()).digest(), "big"), DIGEST_CHARS)


def new_token(cluster_id: str) -> str:
    secret = _base36(int.from_bytes(os.urandom(16), "big"), SECRET_CHARS)
    return f"SWMTKN-1-{cluster_digest(cluster_id)}-{secret}"
