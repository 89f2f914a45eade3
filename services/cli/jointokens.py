"""`shoal up` hands its agents the cluster's current join tokens, read from the api once it answers.

The tokens exist only in the log (the api creates them with the cluster, `docker swarm join-token
--rotate` replaces them), so they are fetched at every start rather than remembered: an agent that
joins for the first time after a rotation gets the new token. Files, not flags, so the secret does
not show in `ps`.
"""

from __future__ import annotations

import os

from services.cli.client import get_json
from services.cli.plan import Options

ROLES = ("worker", "manager")


def clear_join_tokens(options: Options) -> None:
    """Forget the tokens of an earlier run, so no agent joins with a token rotated since."""
    for role in ROLES:
        options.token_file(role).unlink(missing_ok=True)


async def write_join_tokens(options: Options) -> None:
    """Write each role's token where the agents wait for it (owner-only, atomically)."""
    tokens = (await get_json(options.api_addr, "/swarm")).get("JoinTokens") or {}
    for role in ROLES:
        path = options.token_file(role)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(str(tokens.get(role.title(), "")) + "\n")
        tmp.replace(path)
