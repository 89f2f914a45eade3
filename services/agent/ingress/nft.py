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

A backend that refuses a connection (its process just died, before the log says so) is skipped as the
proxy skips it, in the kernel's way: its reset, the answer to a DNATed SYN, is counted and dropped on
its way to the client (`input`, `forward` and `output` filter hooks, after conntrack, which has seen it
and forgotten the connection), so the client's TCP sends its SYN again (after 1 s) as a new connection,
which `numgen` gives to the next backend. A reset answering a SYN is told from a connection's reset by
its sequence number 0 (RFC 9293: a reset for a segment without ACK).

Bytes are counted per backend and direction by `filter` chains that see each packet of the table's
connections once: on `output` (everything this machine sends, loopback included) and on `prerouting`
for packets arriving from another interface (what loopback delivers was counted leaving).

IPv4 only: node addresses are IPv4 literals, and a backend on a node whose address is not (IPv6, a host
name: a proxy-mode node can have one) is left out (`unreachable`), since one such `dnat to` makes `nft`
refuse the whole table, every other route of the node with it.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from dataclasses import replace
from typing import Any, Literal

import msgspec

from services.agent.ingress.table import Backend, Route, Table
from services.kernel.ports import TCP, UDP

PRIORITY_DSTNAT = -100
PRIORITY_SRCNAT = 100
PRIORITY_FILTER = 0
REFUSAL = "tcp flags & (fin | syn | rst | ack) == rst | ack tcp sequence 0"
"""A reset answering a SYN: what a closed port sends, and nothing else does."""
REFUSAL_HOOKS = ("input", "forward", "output")
BYTE_HOOKS = {"output": "", "prerouting": 'iifname != "lo" '}
"""Where each packet of a connection is seen once, and what else a packet must be there."""


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
        *_refusal_chains(routes, addrs),
        *_byte_chains(routes, addrs),
        _chain("output", [f"type nat hook output priority {PRIORITY_DSTNAT}; policy accept;", *entries]),
        _chain("prerouting", [f"type nat hook prerouting priority {PRIORITY_DSTNAT}; policy accept;", *entries]),
        _chain("postrouting", [f"type nat hook postrouting priority {PRIORITY_SRCNAT}; policy accept;", *masquerade]),
    ]
    return f"table ip {name} {{\n}}\ndelete table ip {name}\ntable ip {name} {{\n{''.join(body)}}}\n"


Kind = Literal["forwarded", "refused", "unrouted", "in", "out"]
CountKey = tuple[Kind, str, str]
"""What a counter counts (packets, or for "in" and "out" the bytes to and from a backend), for which
service and backend node ("" for "unrouted")."""


class _Counter(msgspec.Struct):
    packets: int = 0
    bytes: int = 0


class _Rule(msgspec.Struct):
    chain: str
    expr: list[dict[str, Any]]
    comment: str = ""


class _Item(msgspec.Struct):
    rule: _Rule | None = None


class _Listing(msgspec.Struct):
    nftables: list[_Item]


def counts(listing: bytes) -> Counter[CountKey]:
    """What each commented counter of `nft -j list table` saw, summed per what it counts and the
    metrics' labels (a node's backends, an unrouted port's rule per node address): the first packet
    of each connection or UDP flow a backend was given, each refusal of a backend, each connection to
    a route without backends, and the bytes of packets (headers included) to and from each backend.
    msgspec.ValidationError if the listing is not shaped like nft 1.0's."""
    out: Counter[CountKey] = Counter()
    for item in msgspec.json.decode(listing, type=_Listing).nftables:
        rule = item.rule
        found = next((e["counter"] for e in rule.expr if "counter" in e), None) if rule is not None else None
        if rule is None or found is None:
            continue
        counter = msgspec.convert(found, _Counter)
        words = rule.comment.split()
        if not words:
            continue
        kind = _kind(rule.chain, words[-1])
        value = counter.bytes if kind in ("in", "out") else counter.packets
        out[(kind, words[0], words[1] if len(words) > 1 else "")] += value
    return out


def _kind(chain: str, last_word: str) -> Kind:
    """What a commented counter counts, told by the chain it is in (the names `ruleset` gives)."""
    if chain.startswith("bytes_"):
        return "in" if last_word == "in" else "out"
    if chain.startswith("refused_"):
        return "refused"
    return "forwarded" if chain.startswith("route_") else "unrouted"


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
    reject = "reject with tcp reset" if route.protocol == TCP else "reject"
    return f"counter {reject} comment \"{route.service_name}\""


def _refusal_chains(routes: list[Route], addrs: list[str]) -> list[str]:
    """One chain per TCP route dropping its backends' refusals, each counted (the backend's failures);
    a refusal from a backend the route no longer has is dropped too: its client's retry finds the
    route as it is now. Reached from a rule in each filter hook that sees refusals of this table's
    connections only (DNATed, to one of the node's addresses)."""
    tcp = [route for route in routes if route.protocol == TCP]
    if not tcp or not addrs:
        return []
    ports = ", ".join(f"{route.port} : goto {_refusal_chain(route)}" for route in tcp)
    match = (f"ct status dnat ct direction reply ct original ip daddr {{ {', '.join(addrs)} }} {REFUSAL} "
             f"ct original proto-dst vmap {{ {ports} }}")
    out = [_chain(f"refused_{hook}", [f"type filter hook {hook} priority {PRIORITY_FILTER}; policy accept;", match])
           for hook in REFUSAL_HOOKS]
    for route in tcp:
        drops = [f"ip saddr {b.addr} tcp sport {b.port} counter drop {_comment(route, b)}" for b in route.backends]
        out.append(_chain(_refusal_chain(route), [*drops, "drop"]))
    return out


def _byte_chains(routes: list[Route], addrs: list[str]) -> list[str]:
    """A chain per backend counting the bytes of its connections' packets by direction, reached in
    one lookup of the connection's backend (its reply source) from a rule per protocol in each hook."""
    out = []
    for proto in (TCP, UDP):
        picks: dict[tuple[str, int], str] = {}
        for route in routes:
            if route.protocol != proto:
                continue
            for i, b in enumerate(route.backends):
                chain = f"bytes_{_backend_chain(route, i)}"
                out.append(_chain(chain, [f"ct direction {d} counter {_comment(route, b, d)}"
                                          for d in ("original", "reply")]))
                picks.setdefault((b.addr, b.port), chain)  # one port per task: a repeat is a stale state
        if not picks or not addrs:
            continue
        vmap = ", ".join(f"{addr} . {port} : goto {chain}" for (addr, port), chain in picks.items())
        match = (f"meta l4proto {proto} ct status dnat ct original ip daddr {{ {', '.join(addrs)} }} "
                 f"ct reply ip saddr . ct reply proto-src vmap {{ {vmap} }}")
        for hook, only in BYTE_HOOKS.items():
            out.append(_chain(f"bytes_{proto}_{hook}", [
                f"type filter hook {hook} priority {PRIORITY_FILTER}; policy accept;", only + match]))
    return out


def _refusal_chain(route: Route) -> str:
    return f"refused_{route.protocol}_{route.port}"


def _route_chains(route: Route) -> list[str]:
    if not route.backends:
        return []
    picks = ", ".join(f"{i} : goto {_backend_chain(route, i)}" for i in range(len(route.backends)))
    out = [_chain(_route_chain(route), [f"numgen inc mod {len(route.backends)} vmap {{ {picks} }}"])]
    out += [_chain(_backend_chain(route, i), [_dnat(route, b)]) for i, b in enumerate(route.backends)]
    return out


def _dnat(route: Route, backend: Backend) -> str:
    return f"meta l4proto {route.protocol} counter dnat to {backend.addr}:{backend.port} {_comment(route, backend)}"


def _comment(route: Route, backend: Backend, direction: str = "") -> str:
    """Names what a counter counts, read back by `counts`: service, node, task (and the bytes'
    direction: in, to the backend, or out)."""
    way = {"": "", "original": " in", "reply": " out"}[direction]
    return f"comment \"{route.service_name} {backend.node_id} {backend.task_id}{way}\""


def _chain(name: str, rules: list[str]) -> str:
    return f"\tchain {name} {{\n" + "".join(f"\t\t{r}\n" for r in rules) + "\t}\n"
