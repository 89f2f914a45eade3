"""The daemon-level documents: `/version`, `/info` and `/swarm`.

`docker info` prints nearly every field of `/info`, so it is complete in shape even where the
values have no meaning for a gateway (containers, storage driver). The Swarm section is what the
CLI relies on: `NodeID` marks `self` and the `*` row of `docker node ls`.
"""

from __future__ import annotations

import os
import platform
import socket
from importlib import metadata
from typing import Any

from services.api.swarm_spec import spec_view
from services.api.versioning import API_VERSION, MIN_API_VERSION
from services.api.views import manager_addr
from services.kernel.ids import now
from services.kernel.state import Cluster, ClusterState

try:
    VERSION = metadata.version("shoal")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    VERSION = "0.0.0"

DEFAULT_ADDR_POOL = ["10.0.0.0/8"]
SUBNET_SIZE = 24
DATA_PATH_PORT = 4789
SWARM_SPEC: dict[str, Any] = {
    "Name": "default",
    "Labels": {},
    "Orchestration": {"TaskHistoryRetentionLimit": 5},
    "Raft": {"SnapshotInterval": 10000, "KeepOldSnapshots": 0, "LogEntriesForSlowFollowers": 500,
             "ElectionTick": 10, "HeartbeatTick": 1},
    "Dispatcher": {"HeartbeatPeriod": 5_000_000_000},
    "CAConfig": {"NodeCertExpiry": 7_776_000_000_000_000},
    "TaskDefaults": {},
    "EncryptionConfig": {"AutoLockManagers": False},
}
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}


def version_view() -> dict[str, Any]:
    """The component is named `Engine` so `docker version` prints its API versions in full."""
    common = {
        "ApiVersion": API_VERSION, "Arch": _arch(), "BuildTime": "", "GitCommit": "",
        "GoVersion": f"python{platform.python_version()}", "KernelVersion": platform.release(),
        "MinAPIVersion": MIN_API_VERSION, "Os": "linux",
    }
    engine = {"Name": "Engine", "Version": VERSION, "Details": {**common, "Experimental": "false"}}
    return {"Platform": {"Name": "Shoal"}, "Components": [engine], "Version": VERSION, **common,
            "Experimental": False}


def swarm_view(cluster: Cluster, *, tokens: bool) -> dict[str, Any]:
    """`GET /swarm`; without `tokens` it is `Info.Swarm.Cluster`."""
    out: dict[str, Any] = {
        "ID": cluster.id,
        "Version": {"Index": cluster.version.index},
        "CreatedAt": cluster.created_at,
        "UpdatedAt": cluster.updated_at,
        "Spec": spec_view(cluster.spec, SWARM_SPEC),
        "TLSInfo": {},
        "RootRotationInProgress": False,
        "DefaultAddrPool": DEFAULT_ADDR_POOL,
        "SubnetSize": SUBNET_SIZE,
        "DataPathPort": DATA_PATH_PORT,
    }
    if tokens:
        out["JoinTokens"] = {"Worker": cluster.worker_token, "Manager": cluster.manager_token}
    return out


def info_view(state: ClusterState, self_id: str) -> dict[str, Any]:
    node = state.nodes.get(self_id)
    tasks = state.tasks_on_node(self_id) if node is not None else []
    running = sum(1 for t in tasks if t.status.state == "running")
    cpus, memory = _resources(state, self_id)
    return {
        "ID": state.cluster.id if state.cluster is not None else "",
        "Containers": len(tasks), "ContainersRunning": running, "ContainersPaused": 0,
        "ContainersStopped": len(tasks) - running, "Images": 0, "Driver": "", "DriverStatus": None,
        "Plugins": {"Volume": [], "Network": [], "Authorization": None, "Log": []},
        "MemoryLimit": True, "SwapLimit": True, "KernelMemory": False, "KernelMemoryTCP": False,
        "CpuCfsPeriod": True, "CpuCfsQuota": True, "CPUShares": True, "CPUSet": True, "PidsLimit": True,
        "IPv4Forwarding": True, "BridgeNfIptables": False, "BridgeNfIp6tables": False, "Debug": False,
        "NFd": 0, "OomKillDisable": False, "NGoroutines": 0, "SystemTime": now(), "LoggingDriver": "",
        "CgroupDriver": "", "CgroupVersion": "", "NEventsListener": 0, "KernelVersion": platform.release(),
        "OperatingSystem": "Shoal", "OSVersion": VERSION, "OSType": "linux", "Architecture": platform.machine(),
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {"AllowNondistributableArtifactsCIDRs": [], "AllowNondistributableArtifactsHostnames": [],
                           "InsecureRegistryCIDRs": [], "IndexConfigs": {}, "Mirrors": []},
        "NCPU": cpus, "MemTotal": memory, "GenericResources": None, "DockerRootDir": "",
        "HttpProxy": "", "HttpsProxy": "", "NoProxy": "",
        "Name": node.description.hostname if node is not None else socket.gethostname(),
        "Labels": [], "ExperimentalBuild": False, "ServerVersion": VERSION, "Runtimes": {}, "DefaultRuntime": "",
        "Swarm": swarm_info(state, self_id), "LiveRestoreEnabled": False, "Isolation": "", "InitBinary": "",
        "ContainerdCommit": {"ID": "", "Expected": ""}, "RuncCommit": {"ID": "", "Expected": ""},
        "InitCommit": {"ID": "", "Expected": ""}, "SecurityOptions": [], "Warnings": None,
        "Shoal": shoal_info(state),
    }


def shoal_info(state: ClusterState) -> dict[str, Any]:
    """Shoal's extension of `/info`: which process leads each deciding loop, as the log last said
    (`Holder` is host/pid/nonce, `Addr` its metrics address, `Term` the lease revision it won)."""
    return {"Leaders": dict(sorted(state.leaders.items()))}


def swarm_info(state: ClusterState, self_id: str) -> dict[str, Any]:
    managers = [n for n in state.nodes.values() if n.spec.role == "manager"]
    node = state.nodes.get(self_id)
    return {
        "NodeID": self_id,
        "NodeAddr": node.status.addr if node is not None else "",
        "LocalNodeState": "active",
        "ControlAvailable": True,
        "Error": "",
        "RemoteManagers": [{"NodeID": m.id, "Addr": manager_addr(m)} for m in managers],
        "Nodes": len(state.nodes),
        "Managers": len(managers),
        "Cluster": swarm_view(state.cluster, tokens=False) if state.cluster is not None else None,
    }


def _arch() -> str:
    machine = platform.machine()
    return _GO_ARCH.get(machine, machine)


def _resources(state: ClusterState, self_id: str) -> tuple[int, int]:
    """The resources of the node this gateway speaks for, else of the machine it runs on."""
    node = state.nodes.get(self_id)
    if node is not None and node.description.resources.nano_cpus:
        res = node.description.resources
        return res.nano_cpus // 1_000_000_000, res.memory_bytes
    return os.cpu_count() or 1, _host_memory()


def _host_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0

