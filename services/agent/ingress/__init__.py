"""The routing mesh: every node's agent listens on each ingress-published port and forwards to the
service's running tasks on any node. `table` decides who gets traffic (pure), `rotation` in what
order, `tcp` and `udp` move the bytes, `mesh` keeps listeners in step with the event log."""
