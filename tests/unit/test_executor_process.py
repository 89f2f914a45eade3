"""What only the `process` executor promises: commands, env, cwd, logs, and surviving its agent."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schemas.service import ContainerSpec, TaskSpec
from schemas.task import Task
from services.agent.executor import ExecutorError, Phase
from services.agent.executors import procfs
from services.agent.executors.process import ProcessExecutor
from services.kernel.ids import new_id
from tests.unit.test_executor_contract import Exits


def make_task(**spec: object) -> Task:
    container = ContainerSpec(stop_grace_period=300_000_000, **spec)  # type: ignore[arg-type]
    return Task(id=new_id(), node_id="node1", spec=TaskSpec(container_spec=container))


async def dies(pid: int) -> bool:
    """SIGKILL takes effect asynchronously: give the process a moment to be gone."""
    for _ in range(100):
        st = procfs.stat(pid)
        if st is None or not st.alive:
            return True
        await asyncio.sleep(0.01)
    return False


async def execs(pid: int, argv: list[str]) -> bool:
    """The pid is written just before the exec: until the exec is through, /proc shows the wrapper's
    child, or nothing while the kernel swaps the image in. A wrong pid never turns into `argv`."""
    for _ in range(500):
        if procfs.cmdline(pid) == argv:
            return True
        await asyncio.sleep(0.01)
    return False


@pytest.fixture
async def ex(tmp_path: Path) -> AsyncIterator[ProcessExecutor]:
    executor = ProcessExecutor(tmp_path)
    yield executor
    for container in await executor.list():
        await executor.remove(container.task_id)
    await executor.close()


@pytest.mark.parametrize(("spec", "message"), [
    ({"image": "nginx"}, "the process executor needs a command"),
    ({"args": ["no-such-program-here"]}, 'exec: "no-such-program-here": executable file not found in $PATH'),
    ({"args": ["true"], "dir": "/no/such/dir"}, "working directory '/no/such/dir' does not exist"),
])
async def test_prepare_rejects_what_cannot_run(ex: ProcessExecutor, spec: dict[str, object], message: str) -> None:
    with pytest.raises(ExecutorError) as e:
        await ex.prepare(make_task(**spec))
    assert message in str(e.value) and not e.value.temporary
    assert await ex.list() == []


async def test_env_dir_and_logs(ex: ProcessExecutor, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    exits = Exits()
    ex.watch(exits)
    task = make_task(command=["sh", "-c", 'echo "$GREETING" > greeting; echo out; echo err >&2'],
                     env=["GREETING=hello world"], dir=str(work))
    await ex.prepare(task)
    await ex.start(task)
    assert (await exits.wait(task.id)).exit_code == 0
    assert (work / "greeting").read_text() == "hello world\n"
    assert (tmp_path / "tasks" / task.id / "stdout.log").read_text() == "out\n"
    assert (tmp_path / "tasks" / task.id / "stderr.log").read_text() == "err\n"


async def test_pid_is_the_command_and_killing_it_is_a_failure(ex: ProcessExecutor) -> None:
    exits = Exits()
    ex.watch(exits)
    task = make_task(args=["sleep", "30"])
    await ex.prepare(task)
    running = await ex.start(task)
    assert await execs(running.pid, ["sleep", "30"]), f"pid {running.pid} runs {procfs.cmdline(running.pid)}"
    os.kill(running.pid, signal.SIGKILL)
    exited = await exits.wait(task.id)
    assert (exited.phase, exited.exit_code, exited.pid) == (Phase.EXITED, 137, running.pid)


async def test_stop_signal_from_the_spec(ex: ProcessExecutor) -> None:
    task = make_task(command=["sh", "-c", "trap 'exit 7' USR1; while :; do sleep 0.02; done"], stop_signal="SIGUSR1")
    await ex.prepare(task)
    await ex.start(task)
    await asyncio.sleep(0.2)  # let the shell install its trap
    assert (await ex.stop(task)).exit_code == 7


async def test_leftover_children_die_with_the_command(ex: ProcessExecutor, tmp_path: Path) -> None:
    exits = Exits()
    ex.watch(exits)
    task = make_task(command=["sh", "-c", "sleep 30 & echo $! > child; exit 0"], dir=str(tmp_path))
    await ex.prepare(task)
    await ex.start(task)
    assert (await exits.wait(task.id)).exit_code == 0
    assert await dies(int((tmp_path / "child").read_text()))


async def test_a_killed_wrapper_counts_as_killed(ex: ProcessExecutor, tmp_path: Path) -> None:
    exits = Exits()
    ex.watch(exits)
    task = make_task(args=["sleep", "30"])
    await ex.prepare(task)
    running = await ex.start(task)
    wrapper = int((tmp_path / "tasks" / task.id / "wrapper").read_text().split()[0])
    os.kill(wrapper, signal.SIGKILL)
    assert (await exits.wait(task.id)).exit_code == 137
    assert await dies(running.pid)


async def test_a_wrapper_killed_while_nobody_watched_takes_its_command_along(ex: ProcessExecutor,
                                                                            tmp_path: Path) -> None:
    task = make_task(args=["sleep", "30"])
    await ex.prepare(task)
    running = await ex.start(task)
    await ex.close()
    os.kill(int((tmp_path / "tasks" / task.id / "wrapper").read_text().split()[0]), signal.SIGKILL)
    await asyncio.sleep(0.05)
    [listed] = await ProcessExecutor(tmp_path).list()
    assert (listed.phase, listed.exit_code) == (Phase.EXITED, 137)
    assert await dies(running.pid)


async def test_a_reused_pid_is_not_mistaken_for_the_task(ex: ProcessExecutor, tmp_path: Path) -> None:
    task = make_task(args=["sleep", "30"])
    await ex.prepare(task)
    d = tmp_path / "tasks" / task.id
    (d / "start").touch()
    (d / "wrapper").write_text(f"{os.getpid()} 1\n")  # a live pid, but not started at that time
    [listed] = await ProcessExecutor(tmp_path).list()
    assert (listed.phase, listed.exit_code) == (Phase.EXITED, 137)


async def test_a_start_the_agent_died_in_the_middle_of_is_found(ex: ProcessExecutor, tmp_path: Path) -> None:
    task = make_task(args=["sleep", "30"])
    await ex.prepare(task)
    running = await ex.start(task)
    await ex.close()
    (tmp_path / "tasks" / task.id / "wrapper").unlink()  # killed between the spawn and the record
    again = ProcessExecutor(tmp_path)
    [listed] = await again.list()
    assert (listed.phase, listed.pid) == (Phase.RUNNING, running.pid)
    assert (await again.stop(task)).exit_code == 143
    await again.close()


async def test_processes_outlive_the_executor(ex: ProcessExecutor, tmp_path: Path) -> None:
    task = make_task(args=["sleep", "30"])
    await ex.prepare(task)
    running = await ex.start(task)
    await ex.close()
    await asyncio.sleep(0.05)
    st = procfs.stat(running.pid)
    assert st is not None and st.alive


async def test_a_relative_state_dir_works_from_any_working_directory(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ex = ProcessExecutor(Path("state"))
    exits = Exits()
    ex.watch(exits)
    task = make_task(command=["sh", "-c", "exit 4"], dir="/")
    await ex.prepare(task)
    running = await ex.start(task)
    assert running.pid > 0
    assert (await exits.wait(task.id)).exit_code == 4
    await ex.remove(task.id)
    await ex.close()
