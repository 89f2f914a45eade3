"""Spec validation and normalization, image references, generated names and join tokens."""

from __future__ import annotations

import random

import msgspec
import pytest

from schemas.node import NodeSpec
from schemas.service import ServiceSpec
from services.api.errors import InvalidParameter
from services.api.images import valid_reference
from services.api.names import random_name
from services.api.tokens import cluster_digest, new_token
from services.api.validation import (
    normalize_service_spec,
    upgrade_service_spec,
    validate_node_spec,
    validate_service_spec,
)

BASE = {"Name": "web", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}}


def spec(**changes: object) -> ServiceSpec:
    return msgspec.convert({**BASE, **changes}, ServiceSpec)


def task(**changes: object) -> ServiceSpec:
    template = {"ContainerSpec": {"Image": "busybox"}, **changes}
    return spec(TaskTemplate=template)


def refused(s: ServiceSpec) -> str:
    with pytest.raises(InvalidParameter) as e:
        validate_service_spec(s)
    return e.value.message


def test_a_minimal_spec_is_valid() -> None:
    validate_service_spec(spec())


@pytest.mark.parametrize("name", ["web", "a", "web-1", "my_svc", "A1-b_2", "a" * 63])
def test_dns_component_names_are_accepted(name: str) -> None:
    validate_service_spec(spec(Name=name))


@pytest.mark.parametrize("name", ["", "-web", "web-", "we b", "web!", "_x", "é"])
def test_other_names_are_refused_in_dockers_words(name: str) -> None:
    assert refused(spec(Name=name)) == (
        "rpc error: code = InvalidArgument desc = name must be valid as a DNS name component")


def test_long_names_are_refused_quickly_whatever_their_shape() -> None:
    assert "63 characters or fewer" in refused(spec(Name="a" * 64))
    assert "DNS name component" in refused(spec(Name="a" * 10_000 + "!"))


@pytest.mark.parametrize(("s", "message"), [
    (spec(TaskTemplate=None), "mismatched Runtime and *Spec fields"),
    (task(Runtime="plugin"), "unsupported runtime 'plugin'"),
    (spec(Mode={"Replicated": {"Replicas": -2}}), "Mode.Replicated.Replicas: must not be negative (got -2)"),
    (spec(Mode={"ReplicatedJob": {"MaxConcurrent": -1}}), "Mode.ReplicatedJob.MaxConcurrent"),
    (spec(Mode={"Global": {}, "GlobalJob": {}}), "Mode: set only one of"),
    (task(ContainerSpec={"Image": "busybox", "StopGracePeriod": -1}), "ContainerSpec.StopGracePeriod"),
    (task(ContainerSpec={"Image": "busybox", "Healthcheck": {"Interval": 10}}), "Interval: cannot be less than 1ms"),
    (task(ContainerSpec={"Image": "busybox", "Healthcheck": {"Retries": -1}}), "Healthcheck.Retries"),
    (task(Resources={"Limits": {"NanoCPUs": 10}}), "Limits.NanoCPUs: invalid cpu value 1e-08: Must be at least 0.001"),
    (task(Resources={"Reservations": {"MemoryBytes": 1024}}), "MemoryBytes: invalid memory value 1024"),
    (task(Resources={"Limits": {"Pids": -1}}), "Limits.Pids"),
    (task(RestartPolicy={"Condition": "sometimes"}), "RestartPolicy.Condition: 'sometimes' is not one of"),
    (task(RestartPolicy={"Delay": -5}), "RestartPolicy.Delay: must not be negative"),
    (task(Placement={"Constraints": ["node.role"]}), "invalid constraint 'node.role'"),
    (task(Placement={"Preferences": [{"Spread": {}}]}), "Preferences[0].Spread.SpreadDescriptor"),
    (task(Placement={"MaxReplicas": -1}), "Placement.MaxReplicas"),
    (spec(UpdateConfig={"MaxFailureRatio": 1.5}), "UpdateConfig.MaxFailureRatio: must be between 0 and 1"),
    (spec(UpdateConfig={"Order": "random"}), "UpdateConfig.Order"),
    (spec(RollbackConfig={"FailureAction": "rollback"}), "RollbackConfig.FailureAction"),
    (spec(RollbackConfig={"Monitor": -1}), "RollbackConfig.Monitor"),
    (spec(EndpointSpec={"Mode": "magic"}), "EndpointSpec.Mode"),
    (spec(EndpointSpec={"Ports": [{"TargetPort": 70000}]}), "Ports[0].TargetPort: 70000 is not a port number"),
    (spec(EndpointSpec={"Ports": [{"Protocol": "icmp"}]}), "Ports[0].Protocol"),
    (spec(EndpointSpec={"Mode": "dnsrr", "Ports": [{"TargetPort": 80, "PublishedPort": 8080}]}),
     "port published with ingress mode can't be used with dnsrr mode"),
    (spec(EndpointSpec={"Ports": [{"TargetPort": 80, "PublishedPort": 8080},
                                  {"TargetPort": 81, "PublishedPort": 8080}]}), "duplicate published ports"),
])
def test_invalid_parts_are_refused_naming_the_field(s: ServiceSpec, message: str) -> None:
    assert message in refused(s)


def test_unpublished_ingress_ports_never_collide() -> None:
    validate_service_spec(spec(EndpointSpec={"Ports": [{"TargetPort": 80}, {"TargetPort": 81}]}))
    validate_service_spec(spec(EndpointSpec={"Ports": [{"TargetPort": 80, "PublishedPort": 80, "Protocol": "tcp"},
                                                       {"TargetPort": 80, "PublishedPort": 80, "Protocol": "udp"}]}))


def test_the_many_flags_spec_the_cli_sends_is_valid() -> None:
    validate_service_spec(spec(
        Labels={"team": "a"},
        TaskTemplate={
            "ContainerSpec": {"Image": "busybox:local", "Args": ["sleep", "3600"], "Env": ["A=1"], "Init": False,
                              "Healthcheck": {"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000},
                              "DNSConfig": {}},
            "Resources": {"Limits": {"NanoCPUs": 500_000_000, "MemoryBytes": 67108864},
                          "Reservations": {"NanoCPUs": 100_000_000, "MemoryBytes": 16777216}},
            "RestartPolicy": {"Condition": "on-failure", "Delay": 5_000_000_000, "MaxAttempts": 3},
            "Placement": {"Constraints": ["node.role==manager"],
                          "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.dc"}}], "MaxReplicas": 1},
            "ForceUpdate": 0,
        },
        Mode={"Replicated": {"Replicas": 1}},
        UpdateConfig={"Parallelism": 2, "Delay": 1_000_000_000, "FailureAction": "pause", "Monitor": 5_000_000_000,
                      "MaxFailureRatio": 0, "Order": "start-first"},
        EndpointSpec={"Mode": "vip"},
    ))


@pytest.mark.parametrize(("mode", "stored"), [
    (None, {"Replicated": {"Replicas": 1}}),
    ({}, {"Replicated": {"Replicas": 1}}),
    ({"Replicated": {}}, {"Replicated": {"Replicas": 1}}),
    ({"Replicated": {"Replicas": 0}}, {"Replicated": {"Replicas": 0}}),
    ({"Global": {}}, {"Global": {}}),
    ({"ReplicatedJob": {}}, {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}),
    ({"ReplicatedJob": {"MaxConcurrent": 3}}, {"ReplicatedJob": {"MaxConcurrent": 3, "TotalCompletions": 3}}),
])
def test_normalized_modes_always_carry_counts(mode: object, stored: object) -> None:
    normal = normalize_service_spec(spec(Mode=mode))
    assert msgspec.to_builtins(normal)["Mode"] == stored


def test_normalization_stores_what_dockerd_adds() -> None:
    normal = msgspec.to_builtins(normalize_service_spec(spec()))
    assert normal["Labels"] == {} and normal["TaskTemplate"]["Runtime"] == "container"
    assert normal["TaskTemplate"]["ContainerSpec"]["Isolation"] == "default"
    assert normalize_service_spec(spec(**normal)) == normalize_service_spec(spec())


@pytest.mark.parametrize("ref", [
    "busybox", "busybox:latest", "library/busybox:1.36", "ghcr.io/org/app:v1.2.3", "localhost:5000/app",
    "registry.example.com:443/a/b/c", "app@sha256:" + "a" * 64, "app:tag@sha256:" + "0" * 64, "a__b", "a-b.c",
])
def test_valid_image_references(ref: str) -> None:
    assert valid_reference(ref)


@pytest.mark.parametrize("ref", [
    "", "Bad", "busybox:", "busybox:-x", "a//b", "a b", ":tag", "app@sha256:xyz", "-app", "app-", "a" * 300,
    "a" + "-" * 50_000 + "!",
])
def test_invalid_image_references(ref: str) -> None:
    assert not valid_reference(ref)


def test_node_specs_need_a_known_role_and_availability() -> None:
    validate_node_spec(NodeSpec(role="manager", availability="drain"))
    with pytest.raises(InvalidParameter, match="invalid Role: 'boss'"):
        validate_node_spec(NodeSpec(role="boss"))
    with pytest.raises(InvalidParameter, match="invalid Availability: ''"):
        validate_node_spec(NodeSpec(availability=""))


def test_generated_names_avoid_taken_ones_and_are_valid() -> None:
    rng = random.Random(7)
    first = random_name(set(), rng)
    rng = random.Random(7)
    second = random_name({first}, rng)
    assert second != first
    validate_service_spec(spec(Name=second))


def test_tokens_share_the_cluster_digest_and_differ_in_secret() -> None:
    a, b = new_token("c1"), new_token("c1")
    prefix, version, digest, secret = a.split("-")
    assert (prefix, version, digest) == ("SWMTKN", "1", cluster_digest("c1")) and len(secret) == 25
    assert len(digest) == 50 and a != b and b.split("-")[2] == digest
    assert cluster_digest("c2") != digest


@pytest.mark.parametrize(("raw", "upgraded"), [
    ({"Name": "a"}, {"Name": "a"}),
    ({"Networks": []}, {}),
    ({"Networks": [{"Target": "n"}], "TaskTemplate": {}}, {"TaskTemplate": {"Networks": [{"Target": "n"}]}}),
    ({"Networks": [{"Target": "n"}], "TaskTemplate": {"Networks": [{"Target": "m"}]}},
     {"TaskTemplate": {"Networks": [{"Target": "m"}]}}),
    ([1], [1]),
])
def test_the_deprecated_top_level_networks_move_into_the_task_template(raw: object, upgraded: object) -> None:
    assert upgrade_service_spec(raw) == upgraded
