"""The agent: one per node. Joins, heartbeats, follows only its own node's tasks, drives an executor
(`process` or `sim`) through swarmkit's task progression, and reports its state transitions
(the newest per task: a queued report is replaced by a newer one, as swarmkit's reporter does).

Modules: `progress` decides (pure), `worker` drives, `executor` is the plug-in protocol with
`executors/` behind it, `reporter` appends status reports, `join`/`heartbeat`/`identity` make the
node known, `agent` wires them into a process.
"""
