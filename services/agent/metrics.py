"""The agent's own Prometheus metrics (the projection's come from the kernel's collector)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

EXECUTOR_OPS = Counter("shoal_agent_executor_operations_total", "Executor operations attempted",
                       ["executor", "op"])
EXECUTOR_ERRORS = Counter("shoal_agent_executor_errors_total", "Executor operations that failed",
                          ["executor", "op", "kind"])
TASKS_RUNNING = Gauge("shoal_agent_tasks_running", "Tasks whose container is running on this agent's nodes")
LOG_STREAMS = Gauge("shoal_agent_log_streams", "Task log streams this agent is serving (schemas/logs.py)")
