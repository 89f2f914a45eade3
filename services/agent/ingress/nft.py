"""The routing mesh forwarded by the kernel: the ingress table as an nftables ruleset (pure).

One table per agent, named for its node, replaced whole by every change in one `nft -f` transaction
(`replace`): the kernel swaps old rules for new atomically, and connections already forwarded keep
their backend, because conntrack remembers each connection's translation and consults these rules
only for a connection's first packet.

For each route and each of the node's addresses, traffic to `addr:published` is sent to a per-route
chain that picks a backend with `numgen inc mod N` (round robin, per new connection or UDP flow) and
jumps to that backend's chain: a counter (connections per backend, `nft list table ...`) and the DNAT.
The same rules hang off two hooks: `output`, for connections made on this machine (loopback), and
`prerouting`, for connections from other hosts. A connection from another host DNATed to a backend on
another node is forwarded by this host, so it is masqueraded (source rewritten to this host's) on its
way out, and the backend's replies come back through here to be translated back. A route without
backends rejects (TCP reset, ICMP port unreachable for UDP), as the proxy closes such connections.
IPv4 only: node addresses are IPv4 literals, and a backend on a node whose address is not (IPv6, a host
name: a proxy-mode node can have one) is left out (`unreachable`), since one such `dnat to` makes `nft`
refuse the whole table, every other route of the node with it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace

from services.agent.ingress.table import Backend, Route, Table
from services.kernel.ports import TCP

PRIORITY_DSTNAT = -100
PRIORITY_SRCNAT = 100


def table_name(node_id: str) -> str:
    """The agent's own table: one per node, so agents sharing a host (tests, `shoal up`) never touch
    each other's rules."""
    return "shoal_" + re.sub(r"[^A-Za-z0-9_]", "_", node_id)


def check_addrs(addrs: list[str]) -> None:
    """ValueError unless every node address is an IPv4 literal (what the rules can match)."""
    for addr in addrs:
        if not _is_ipv4(addr):
            raise ValueError(f"{addr} is not an IPv4 address")


def unreachable(table: Table) -> list[Backend]:
    """The backends the rules leave out: those whose node address is not an IPv4 literal."""
    return [b for route in table.values() for b in route.backends if not _is_ipv4(b.addr)]


def ruleset(name: str, addrs: list[str], table: Table) -> str:
    """The whole table, as `nft -f` input that replaces any table of that name (`delete` of a
    just-declared table cannot fail, so this works whether or not it existed)."""
    routes = [replace(route, backends=tuple(b for b in route.backends if _is_ipv4(b.addr)))
              for route in (table[key] for key in sorted(table))]
    chains = [chain for route in routes for chain in _route_chains(route)]
    entries = [f"ip daddr {addr} {route.protocol} dport {route.port} {_verdict(route)}"
               for route in routes for addr in addrs]
    masquerade = [f"ct status dnat ct original ip daddr {addr} ct original protocol {route.protocol} "
                  f"ct original proto-dst {route.port} oifname != \"lo\" masquerade"
                  for route in routes if route.backends for addr in addrs]
    body = [
        *chains,
        _chain("output", [f"type nat hook output priority {PRIORITY_DSTNAT}; policy accept;", *entries]),
        _chain("prerouting", [f"type nat hook prerouting priority {PRIORITY_DSTNAT}; policy accept;", *entries]),
        _chain("postrouting", [f"type nat hook postrouting priority {PRIORITY_SRCNAT}; policy accept;", *masquerade]),
    ]
    return f"table ip {name} {{\n}}\ndelete table ip {name}\ntable ip {name} {{\n{''.join(body)}}}\n"


def _is_ipv4(addr: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(addr), ipaddress.IPv4Address)
    except ValueError:
        return False


def delete(name: str) -> str:
    """`nft -f` input removing the table whether or not it exists."""
    return f"table ip {name} {{\n}}\ndelete table ip {name}\n"


def _route_chain(route: Route) -> str:
    return f"route_{route.protocol}_{route.port}"


def _backend_chain(route: Route, i: int) -> str:
    return f"{_route_chain(route)}_{i}"


def _verdict(route: Route) -> str:
    if route.backends:
        return f"goto {_route_chain(route)}"
    return "reject with tcp reset" if route.protocol == TCP else "reject"


def _route_chains(route: Route) -> list[str]:
    if not route.backends:
        return []
    picks = ", ".join(f"{i} : goto {_backend_chain(route, i)}" for i in range(len(route.backends)))
    out = [_chain(_route_chain(route), [f"numgen inc mod {len(route.backends)} vmap {{ {picks} }}"])]
    out += [_chain(_backend_chain(route, i), [_dnat(route, b)]) for i, b in enumerate(route.backends)]
    return out


def _dnat(route: Route, backend: Backend) -> str:
    return (f"meta l4proto {route.protocol} counter dnat to {backend.addr}:{backend.port} "
            f"comment \"{route.service_name} {backend.node_id} {backend.task_id}\"")


def _chain(name: str, rules: list[str]) -> str:
    return f"\tchain {name} {{\n" + "".join(f"\t\t{r}\n" for r in rules) + "\t}\n"
