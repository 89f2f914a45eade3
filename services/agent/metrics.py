"""The agent's own Prometheus metrics (the projection's come from the kernel's collector)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram

from schemas.task import Task
from services.kernel.ids import parse_ns

EXECUTOR_OPS = Counter("shoal_agent_executor_operations_total", "Executor operations attempted",
                       ["executor", "op"])
EXECUTOR_ERRORS = Counter("shoal_agent_executor_errors_total", "Executor operations that failed",
                          ["executor", "op", "kind"])
TASKS_RUNNING = Gauge("shoal_agent_tasks_running", "Tasks whose container is running on this agent's nodes")
START_LATENCY = Histogram(
    "shoal_task_start_latency_seconds", "Time from TaskCreated to the agent reporting the task running",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
REPORTS_REPLACED = Counter("shoal_agent_status_reports_replaced_total",
                           "Status reports replaced by a newer one of the same task before they were sent")
LOG_STREAMS = Gauge("shoal_agent_log_streams", "Task log streams this agent is serving (schemas/logs.py)")


def observe_started(task: Task) -> None:
    try:
        START_LATENCY.observe(max(0, time.time_ns() - parse_ns(task.created_at)) / 1e9)
    except ValueError:
        return  # a task without a readable creation time says nothing about latency
