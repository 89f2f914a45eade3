"""The kernel mode's rules as text, what their counters and conntrack say, and the table's name."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest
import uvloop

from services.agent.ingress import conntrack, kernel, nft
from services.agent.ingress.kernel import NftError
from services.agent.ingress.table import Backend, Route

WEB = Route("tcp", 30001, "s1", "web", (Backend("n1", "t1", "127.0.0.1", 41000),
                                        Backend("n3", "t3", "127.0.0.3", 41002)))
DNS = Route("udp", 30053, "s2", "dns", ())


def _chain(text: str, name: str) -> list[str]:
    """The rules of one chain, stripped."""
    lines = text.splitlines()
    start = lines.index(f"\tchain {name} {{")
    end = lines.index("\t}", start)
    return [line.strip() for line in lines[start + 1:end]]


def test_a_route_round_robins_over_its_backends_on_each_node_address_from_both_hooks() -> None:
    text = nft.ruleset("shoal_n2", ["127.0.0.2"], {("tcp", 30001): WEB})
    assert text.startswith("table ip shoal_n2 {\n}\ndelete table ip shoal_n2\ntable ip shoal_n2 {\n")
    assert _chain(text, "route_tcp_30001") == [
        "numgen inc mod 2 vmap { 0 : goto route_tcp_30001_0, 1 : goto route_tcp_30001_1 }"]
    assert _chain(text, "route_tcp_30001_0") == [
        'meta l4proto tcp counter dnat to 127.0.0.1:41000 comment "web n1 t1"']
    assert _chain(text, "route_tcp_30001_1") == [
        'meta l4proto tcp counter dnat to 127.0.0.3:41002 comment "web n3 t3"']
    entry = "ip daddr 127.0.0.2 tcp dport 30001 goto route_tcp_30001"
    assert _chain(text, "output") == ["type nat hook output priority -100; policy accept;", entry]
    assert _chain(text, "prerouting") == ["type nat hook prerouting priority -100; policy accept;", entry]
    assert _chain(text, "postrouting") == [
        "type nat hook postrouting priority 100; policy accept;",
        'ct status dnat ct original ip daddr 127.0.0.2 ct original protocol tcp ct original proto-dst 30001 '
        'oifname != "lo" masquerade']


def test_a_route_without_backends_rejects_and_every_address_gets_every_route() -> None:
    text = nft.ruleset("t", ["10.0.0.1", "10.0.0.2"], {("udp", 30053): DNS, ("tcp", 30001): WEB})
    assert _chain(text, "output")[1:] == [
        "ip daddr 10.0.0.1 tcp dport 30001 goto route_tcp_30001",
        "ip daddr 10.0.0.2 tcp dport 30001 goto route_tcp_30001",
        'ip daddr 10.0.0.1 udp dport 30053 counter reject comment "dns"',
        'ip daddr 10.0.0.2 udp dport 30053 counter reject comment "dns"',
    ]
    assert "route_udp_30053" not in text
    assert len(_chain(text, "postrouting")) == 3, "only routes with backends are masqueraded"
    empty_tcp = nft.ruleset("t", ["10.0.0.1"], {("tcp", 30001): Route("tcp", 30001, "s1", "web", ())})
    assert _chain(empty_tcp, "output")[1:] == [
        'ip daddr 10.0.0.1 tcp dport 30001 counter reject with tcp reset comment "web"']
    assert _chain(empty_tcp, "refused_tcp_30001") == ["drop"], "a refusal that arrives after its backend left"


def test_refusals_of_the_tables_connections_are_dropped_and_counted_per_backend_in_every_filter_hook() -> None:
    """A reset answering a DNATed SYN (sequence 0) is dropped, so the client sends its SYN again and
    the route picks the next backend; a UDP route has nothing of the kind."""
    text = nft.ruleset("t", ["10.0.0.1", "10.0.0.2"], {("tcp", 30001): WEB, ("udp", 30053): DNS})
    match = ("ct status dnat ct direction reply ct original ip daddr { 10.0.0.1, 10.0.0.2 } "
             "tcp flags & (fin | syn | rst | ack) == rst | ack tcp sequence 0 "
             "ct original proto-dst vmap { 30001 : goto refused_tcp_30001 }")
    for hook in ("input", "forward", "output"):
        assert _chain(text, f"refused_{hook}") == [f"type filter hook {hook} priority 0; policy accept;", match]
    assert _chain(text, "refused_tcp_30001") == [
        'ip saddr 127.0.0.1 tcp sport 41000 counter drop comment "web n1 t1"',
        'ip saddr 127.0.0.3 tcp sport 41002 counter drop comment "web n3 t3"',
        "drop"]
    assert "refused_udp" not in text
    assert "refused_" not in nft.ruleset("t", ["10.0.0.1"], {("udp", 30053): DNS})


def test_bytes_are_counted_per_backend_and_direction_from_one_lookup_per_protocol_and_hook() -> None:
    """Each packet of the table's connections is seen once: leaving (`output`) or arriving from
    another interface (`prerouting`); its backend is found by the connection's reply source."""
    text = nft.ruleset("t", ["10.0.0.1"], {("tcp", 30001): WEB, ("udp", 30053): DNS})
    assert _chain(text, "bytes_route_tcp_30001_1") == [
        'ct direction original counter comment "web n3 t3 in"',
        'ct direction reply counter comment "web n3 t3 out"']
    lookup = ("meta l4proto tcp ct status dnat ct original ip daddr { 10.0.0.1 } ct reply ip saddr . ct reply "
              "proto-src vmap { 127.0.0.1 . 41000 : goto bytes_route_tcp_30001_0, "
              "127.0.0.3 . 41002 : goto bytes_route_tcp_30001_1 }")
    assert _chain(text, "bytes_tcp_output") == ["type filter hook output priority 0; policy accept;", lookup]
    assert _chain(text, "bytes_tcp_prerouting") == ["type filter hook prerouting priority 0; policy accept;",
                                                    'iifname != "lo" ' + lookup]
    assert "bytes_udp" not in text, "a route without backends has nothing to count"


def test_counts_sum_each_commented_counter_by_what_it_counts_and_its_labels() -> None:
    """`nft -j list table` as nft 1.0.6 prints it (trimmed): dnat counters are connections given to a
    backend, refusal counters its failures, reject counters (one per node address) unrouted ones,
    byte counters (bytes, not packets) what went to and came from a backend."""
    def rule(chain: str, comment: str, packets: int) -> str:
        return (f'{{"rule": {{"family": "ip", "table": "t", "chain": "{chain}", "handle": 9, "comment": "{comment}", '
                f'"expr": [{{"counter": {{"packets": {packets}, "bytes": {packets * 60}}}}}, {{"drop": null}}]}}}}')
    listing = ('{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"table": {"family": "ip", "name": "t"}}, '
               '{"chain": {"family": "ip", "table": "t", "name": "route_tcp_30001_0"}}, '
               '{"rule": {"family": "ip", "table": "t", "chain": "route_tcp_30001", "handle": 3, '
               '"expr": [{"vmap": {}}]}}, '
               + ", ".join([rule("route_tcp_30001_0", "web n1 t1", 5), rule("route_tcp_30001_1", "web n1 t2", 2),
                            rule("refused_tcp_30001", "web n1 t2", 1), rule("output", "dns", 3),
                            rule("prerouting", "dns", 4), rule("bytes_route_tcp_30001_0", "web n1 t1 in", 2),
                            rule("bytes_route_tcp_30001_0", "web n1 t1 out", 3),
                            rule("bytes_route_tcp_30001_1", "web n1 t2 out", 1)]) + "]}")
    assert nft.counts(listing.encode()) == {("forwarded", "web", "n1"): 7, ("refused", "web", "n1"): 1,
                                            ("unrouted", "dns", ""): 7, ("in", "web", "n1"): 120,
                                            ("out", "web", "n1"): 240}
    # What an nft of another JSON schema might print: refused as a whole (the agent logs and retries).
    for unreadable in (b"not json", b'{"tables": []}', b'{"nftables": [{"rule": {"chain": "route_tcp_1_0", '
                       b'"comment": "web n1 t1", "expr": [{"counter": {"packets": "many"}}]}}]}'):
        with pytest.raises(msgspec.DecodeError):
            nft.counts(unreadable)


def test_an_empty_table_keeps_the_hooks_and_the_same_input_gives_the_same_text() -> None:
    text = nft.ruleset("t", ["127.0.0.1"], {})
    assert _chain(text, "output") == ["type nat hook output priority -100; policy accept;"]
    assert nft.ruleset("t", ["127.0.0.1"], {("tcp", 30001): WEB}) == nft.ruleset("t", ["127.0.0.1"],
                                                                                   {("tcp", 30001): WEB})


def test_names_and_addresses() -> None:
    assert nft.table_name("abc123") == "shoal_abc123"
    assert nft.table_name("a-b.c") == "shoal_a_b_c"
    assert nft.delete("shoal_x") == "table ip shoal_x {\n}\ndelete table ip shoal_x\n"
    nft.check_addrs(["127.0.0.1", "10.1.2.3"])
    with pytest.raises(ValueError, match="is not an IPv4 address"):
        nft.check_addrs(["::1"])
    with pytest.raises(ValueError):
        nft.check_addrs(["node1.example"])


def test_backends_on_nodes_without_an_ipv4_address_are_left_out_not_the_whole_table() -> None:
    """A proxy-mode node may have an IPv6 or named address; one `dnat to ::1:...` would make nft refuse
    every route of this node."""
    mixed = Route("tcp", 30001, "s1", "web", (Backend("n1", "t1", "127.0.0.1", 41000), Backend("n6", "t6", "::1", 1),
                                              Backend("nh", "th", "node7.lan", 41002)))
    only_v6 = Route("udp", 30053, "s2", "dns", (Backend("n6", "t7", "fd00::6", 41003),))
    table = {("tcp", 30001): mixed, ("udp", 30053): only_v6}
    text = nft.ruleset("t", ["127.0.0.1"], table)
    assert _chain(text, "route_tcp_30001") == ["numgen inc mod 1 vmap { 0 : goto route_tcp_30001_0 }"]
    assert "::1" not in text and "node7.lan" not in text and "fd00::6" not in text
    assert _chain(text, "output")[1:] == ["ip daddr 127.0.0.1 tcp dport 30001 goto route_tcp_30001",
                                          'ip daddr 127.0.0.1 udp dport 30053 counter reject comment "dns"']
    assert [b.task_id for b in nft.unreachable(table)] == ["t6", "th", "t7"]


async def test_an_nft_that_cannot_be_started_is_a_refused_transaction_not_a_crash(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The mesh logs and retries an `NftError`; any other exception would end the agent."""
    monkeypatch.setattr(kernel, "NFT", str(tmp_path / "nft"))
    with pytest.raises(NftError, match="cannot run"):
        await kernel.run_nft("list tables\n")


def test_established_counts_the_nodes_own_published_connections_per_service() -> None:
    """`conntrack -L` lines as conntrack 1.4.7 prints them: the original direction first."""
    def line(dst: str, dport: int, proto: str = "tcp") -> str:
        return (f"{proto}      6 431999 ESTABLISHED src=127.0.0.9 dst={dst} sport=37506 dport={dport} "
                f"src=127.0.0.1 dst=127.0.0.9 sport=41000 dport=37506 [ASSURED] mark=0 use=1")
    listing = "\n".join([line("10.0.0.1", 30001), line("10.0.0.1", 30001), line("10.0.0.2", 30001),
                         line("10.0.0.1", 30002), line("10.0.0.1", 30053, "udp"), "", "garbage"])
    table = {("tcp", 30001): WEB, ("udp", 30053): DNS}
    assert conntrack.established(listing, ["10.0.0.1"], table) == {"web": 2}, "not another node's, nor unpublished"
    assert conntrack.established_on("10.0.0.1") == [
        "-L", "-p", "tcp", "--dst-nat", "--state", "ESTABLISHED", "--orig-dst", "10.0.0.1"]


def test_a_command_gone_before_its_input_is_written_is_an_nft_error_not_a_crash_on_uvloop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """uvloop raises RuntimeError writing to the pipe of a child that has exited (its pipes closed):
    escaping the mesh, it ended the agent. A command given no input gets no pipe to write."""
    spawn = asyncio.create_subprocess_exec

    async def gone_before_the_write(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        proc = await spawn(*args, **kwargs)
        await proc.wait()
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", gone_before_the_write)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        with pytest.raises(NftError, match="true ended before reading its input"):
            runner.run(kernel.run_tool(["true"], stdin=b"table ip t {}\n"))
        assert runner.run(kernel.run_tool(["echo", "listed"])) == b"listed\n"


def test_backends_that_left_every_route_are_forgotten_by_conntrack_tcp_only_where_unanswered() -> None:
    moved = Route("tcp", 30001, "s1", "web", (Backend("n3", "t3", "127.0.0.3", 41002),))
    dns = Route("udp", 30053, "s2", "dns", (Backend("n1", "t5", "127.0.0.1", 41000),))
    assert conntrack.departed({("tcp", 30001): WEB, ("udp", 30053): dns}, {("tcp", 30001): moved}) == [
        ("tcp", "127.0.0.1", 41000), ("udp", "127.0.0.1", 41000)]
    assert conntrack.departed({("tcp", 30001): WEB}, {("tcp", 30001): WEB}) == []
    assert conntrack.forget(("tcp", "127.0.0.1", 41000)) == [
        "-D", "-p", "tcp", "--dst-nat", "--reply-src", "127.0.0.1", "--reply-port-src", "41000", "--state", "SYN_SENT"]
    assert conntrack.forget(("udp", "10.0.0.2", 41003)) == [
        "-D", "-p", "udp", "--dst-nat", "--reply-src", "10.0.0.2", "--reply-port-src", "41003"]
