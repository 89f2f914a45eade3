"""The rest of the reference's `service`, `node`, `swarm join-token` and `events` commands
(`../shared/reference/docker-cli-wire.md`), run with the real docker CLI against a real api process,
and their output checked. The control plane is stood in for as in test_docker_cli.py."""

from __future__ import annotations

import asyncio
import json

import pytest

from schemas.events import TaskDesiredStateChanged, TaskStatusChanged
from schemas.task import TaskState, TaskStatus
from tests.e2e.test_docker_cli import Docker, _rows, control, docker, gateway
from tests.unit.test_api_helpers import FakeControlPlane

pytestmark = pytest.mark.e2e

__all__ = ["control", "docker", "gateway"]

MANY_FLAGS = ("service", "create", "-d", "--name", "c", "--replicas", "2", "--limit-cpu", "0.5",
              "--limit-memory", "64M", "--reserve-cpu", "0.1", "--reserve-memory", "16M",
              "--restart-condition", "on-failure", "--restart-delay", "5s", "--restart-max-attempts", "3",
              "--constraint", "node.role==manager", "--env", "A=1", "--health-cmd", "true",
              "--health-interval", "5s", "--label", "team=a", "--update-parallelism", "2",
              "--update-delay", "1s", "--update-failure-action", "pause", "--update-monitor", "5s",
              "--update-order", "start-first", "busybox", "sleep", "60")


async def test_create_with_many_flags_reads_back_in_pretty_and_format(docker: Docker,
                                                                      control: FakeControlPlane) -> None:
    await control.join("mgr", role="manager")
    service_id = (await docker.out(*MANY_FLAGS)).strip()
    pretty = await docker.out("service", "inspect", "--pretty", "c")
    for line in (f"ID:\t\t{service_id}", "Name:\t\tc", "Labels:\n team=a", "Replicas:\t2",
                 "Placement:\n Constraints:\t[node.role==manager]",
                 "UpdateConfig:\n Parallelism:\t2\n Delay:\t\t1s\n On failure:\tpause\n Monitoring Period: 5s",
                 "Update order:      start-first", "Image:\t\tbusybox:latest", "Args:\t\tsleep 60",
                 "Env:\t\tA=1", "Resources:\n Reservations:\n  CPU:\t\t0.1\n  Memory:\t16MiB\n Limits:\n  CPU:\t\t0.5\n"
                 "  Memory:\t64MiB", "Endpoint Mode:\tvip", " Healthcheck:\n  Interval = 5s",
                 "\t Test = CMD-SHELL\n\t Test = true"):
        assert line in pretty, f"{line!r} not in\n{pretty}"
    restart = "{{json .Spec.TaskTemplate.RestartPolicy}}"
    assert json.loads(await docker.out("service", "inspect", "--format", restart, "c")) == {
        "Condition": "on-failure", "Delay": 5_000_000_000, "MaxAttempts": 3}
    assert (await docker.out("service", "inspect", "--format", "{{json .Spec.Labels}}", service_id[:6])).strip() \
        == '{"team":"a"}'


async def test_defaults_global_and_placement_preferences(docker: Docker, control: FakeControlPlane) -> None:
    await docker.run("service", "create", "-d", "--name", "one", "busybox")
    assert (await docker.out("service", "inspect", "--format", "{{.Spec.Mode.Replicated.Replicas}}", "one")).strip() \
        == "1"
    defaults = "{{.Spec.TaskTemplate.RestartPolicy.Condition}} {{.Spec.UpdateConfig.Order}}"
    assert (await docker.out("service", "inspect", "--format", defaults, "one")).strip() == "any stop-first"
    await docker.run("service", "create", "-d", "--name", "pref", "--placement-pref", "spread=node.labels.dc",
                     "--replicas-max-per-node", "1", "busybox")
    pretty = await docker.out("service", "inspect", "--pretty", "pref")
    assert " Preferences:   [spread=node.labels.dc]\n Max Replicas Per Node:   1\n" in pretty, pretty
    await docker.run("service", "create", "-d", "--mode", "global", "--name", "g", "busybox")
    assert (await docker.out("service", "inspect", "--format", "{{.Spec.Mode.Global}}", "g")).strip() == "{}"


async def test_ls_filters_and_quiet(docker: Docker, control: FakeControlPlane) -> None:
    node = await control.join("mgr", role="manager")
    web = (await docker.out("service", "create", "-d", "--name", "web", "--replicas", "2", "busybox")).strip()
    api = (await docker.out("service", "create", "-d", "--name", "api", "--label", "tier=back", "busybox")).strip()
    await control.run_service(web, [node])
    rows = _rows(await docker.out("service", "ls"))
    assert [r[:4] for r in rows] == [[api[:12], "api", "replicated", "0/1"], [web[:12], "web", "replicated", "2/2"]]
    assert [r[1] for r in _rows(await docker.out("service", "ls", "--filter", "name=we"))] == ["web"]
    assert [r[1] for r in _rows(await docker.out("service", "ls", "--filter", "label=tier=back"))] == ["api"]
    assert [r[1] for r in _rows(await docker.out("service", "ls", "--filter", f"id={web[:5]}"))] == ["web"]
    assert sorted((await docker.out("service", "ls", "-q")).split()) == sorted([web[:12], api[:12]])
    code, _, err = await docker.run("service", "ls", "--filter", "bogus=1", ok=False)
    assert code == 1 and "Invalid filter 'bogus'" in err


async def test_ps_of_several_services_of_rejected_tasks_and_of_nothing(docker: Docker,
                                                                        control: FakeControlPlane) -> None:
    node = await control.join("mgr", role="manager")
    web = (await docker.out("service", "create", "-d", "--name", "web", "busybox")).strip()
    bad = (await docker.out("service", "create", "-d", "--name", "badimg", "busybox:doesnotexist")).strip()
    await control.run_service(web, [node])
    [first] = await control.run_service(bad, [node])
    await control.append(
        TaskStatusChanged(task_id=first, status=TaskStatus(state=TaskState.REJECTED, message="preparing",
                                                           err="No such image: busybox:doesnotexist")),
        TaskDesiredStateChanged(task_id=first, desired_state=TaskState.SHUTDOWN))
    [second] = await control.run_service(bad, [node])
    lines = (await docker.out("service", "ps", "web", "badimg")).strip().splitlines()
    assert lines[0].split()[:3] == ["ID", "NAME", "IMAGE"]
    names = [line.split()[1] for line in lines[1:]]
    assert names == ["badimg.1", "\\_", "web.1"], lines
    history = lines[2]
    assert history.split()[:3] == [first[:12], "\\_", "badimg.1"] and "Shutdown" in history
    assert "Rejected" in history and '"No such image: busybox:doesno…"' in history
    no_trunc = await docker.out("service", "ps", "--no-trunc", "badimg")
    assert '"No such image: busybox:doesnotexist"' in no_trunc and second in no_trunc
    code, _, err = await docker.run("service", "ps", "nosuchsvc", ok=False)
    assert code == 1 and "no such service: nosuchsvc" in err and "Error response" not in err
    fmt = await docker.out("service", "ps", "--format", "{{.Name}} {{.Node}} {{.DesiredState}}", "web")
    assert fmt.strip() == "web.1 mgr Running"


async def test_scale_and_rm_of_missing_services(docker: Docker, control: FakeControlPlane) -> None:
    await docker.run("service", "create", "-d", "--name", "web", "busybox")
    code, _, err = await docker.run("service", "scale", "-d", "nosuchsvc=2", ok=False)
    assert code == 1 and "nosuchsvc: Error response from daemon: service nosuchsvc not found" in err
    code, out, err = await docker.run("service", "rm", "nosuchsvc", "web", ok=False)
    assert code == 1 and out.split() == ["web"] and "service nosuchsvc not found" in err
    assert (await docker.out("service", "ls", "-q")).strip() == ""


async def test_node_ls_filters_quiet_and_inspect(docker: Docker, control: FakeControlPlane) -> None:
    manager = await control.join("mgr", role="manager")
    worker = await control.join("wrk")
    assert [r[0] for r in _rows(await docker.out("node", "ls", "--filter", "role=manager"))] == [manager]
    assert sorted((await docker.out("node", "ls", "-q")).split()) == sorted([manager, worker])
    assert [r[0] for r in _rows(await docker.out("node", "ls", "--filter", "name=wr"))] == [worker]
    fmt = await docker.out("node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.Availability}} {{.ManagerStatus}}")
    assert sorted(fmt.strip().splitlines()) == ["mgr Ready Active Leader", "wrk Ready Active"]
    pretty = await docker.out("node", "inspect", "--pretty", worker)
    for line in (f"ID:\t\t\t{worker}", "Hostname:              \twrk",
                 "Status:\n State:\t\t\tReady\n Availability:         \tActive\n Address:\t\t10.0.0.1",
                 "Platform:\n Operating System:\tlinux\n Architecture:\t\tx86_64",
                 "Resources:\n CPUs:\t\t\t2\n Memory:\t\t4GiB", "Engine Version:\t\tshoal-sim"):
        assert line in pretty, f"{line!r} not in\n{pretty}"
    assert (await docker.out("node", "inspect", "--format", "{{.Spec.Role}} {{.Description.Hostname}}", "wrk")) \
        .strip() == "worker wrk"
    code, out, err = await docker.run("node", "inspect", "nosuchnode", ok=False)
    assert code == 1 and out.strip() == "[]" and "node nosuchnode not found" in err


async def test_node_update_pause_active_labels_and_promote_twice(docker: Docker, control: FakeControlPlane) -> None:
    manager = await control.join("mgr", role="manager")
    worker = await control.join("wrk")
    await docker.run("node", "update", "--availability", "pause", "--label-add", "dc=east", "--label-add", "x", worker)
    assert _rows(await docker.out("node", "ls", "--filter", "node.label=dc=east"))[0][:4] == \
        [worker, "wrk", "Ready", "Pause"]
    await docker.run("node", "update", "--availability", "active", "--label-rm", "x", worker)
    labels = "{{.Spec.Availability}} {{json .Spec.Labels}}"
    assert (await docker.out("node", "inspect", "--format", labels, worker)).strip() == 'active {"dc":"east"}'
    code, _, err = await docker.run("node", "update", "--label-rm", "nope", worker, ok=False)
    assert code == 1 and "nope" in err
    assert f"Node {manager} is already a manager." in await docker.out("node", "promote", manager)
    assert f"Node {worker} promoted to a manager in the swarm." in await docker.out("node", "promote", worker)
    assert len(_rows(await docker.out("node", "ls", "--filter", "role=manager"))) == 2


async def test_node_ps_of_a_worker_names_its_tasks(docker: Docker, control: FakeControlPlane) -> None:
    await control.join("mgr", role="manager")
    worker = await control.join("wrk")
    service_id = (await docker.out("service", "create", "-d", "--name", "web", "--replicas", "2", "busybox")).strip()
    tasks = await control.run_service(service_id, [worker])
    rows = _rows(await docker.out("node", "ps", worker))
    assert sorted(r[0] for r in rows) == sorted(t[:12] for t in tasks)
    assert sorted(r[1] for r in rows) == ["web.1", "web.2"] and {r[3] for r in rows} == {"wrk"}


async def test_join_token_manager_and_quiet(docker: Docker, control: FakeControlPlane) -> None:
    await control.join("mgr", role="manager")
    shown = await docker.out("swarm", "join-token", "manager")
    token = (await docker.out("swarm", "join-token", "-q", "manager")).strip()
    assert "To add a manager to this swarm, run the following command:" in shown and token in shown
    worker = (await docker.out("swarm", "join-token", "-q", "worker")).strip()
    assert worker != token and worker.split("-")[2] == token.split("-")[2]
    await docker.run("swarm", "join-token", "--rotate", "-q", "manager")
    assert (await docker.out("swarm", "join-token", "-q", "manager")).strip() != token
    assert (await docker.out("swarm", "join-token", "-q", "worker")).strip() == worker


async def test_events_of_nodes_carry_old_and_new_values(docker: Docker, control: FakeControlPlane) -> None:
    worker = await control.join("wrk")
    await docker.run("node", "update", "--availability", "drain", worker)
    await docker.run("node", "promote", worker)
    await asyncio.sleep(1.1)  # `--until 0s` is whole seconds
    fmt = "{{.Type}} {{.Action}} {{.Actor.ID}} {{index .Actor.Attributes \"availability.new\"}}" \
          " {{index .Actor.Attributes \"role.new\"}}"
    out = await docker.out("events", "--since", "5m", "--until", "0s", "--filter", "type=node", "--format", fmt)
    lines = [line.split() for line in out.splitlines()]
    assert ["node", "update", worker, "drain"] in [line[:4] for line in lines], out
    assert any(line[:3] == ["node", "update", worker] and line[-1] == "manager" for line in lines), out
