"""The routing mesh's metrics. Labels stay bounded: a service's name and a backend's node id (tasks
come and go; nodes and services are few)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONNECTIONS = Counter("shoal_ingress_connections_total",
                      "Connections (TCP) or datagram flows (UDP) forwarded, by service and backend node",
                      ["service", "backend"])
BYTES = Counter("shoal_ingress_bytes_total",
                "Bytes forwarded, by service, backend node and direction (in: to the backend)",
                ["service", "backend", "direction"])
BACKEND_FAILURES = Counter("shoal_ingress_backend_failures_total",
                           "Backends that refused or did not answer a connection (another was tried)",
                           ["service", "backend"])
UNROUTED = Counter("shoal_ingress_unrouted_total",
                   "Connections closed (UDP: datagrams dropped) because no backend could take them "
                   "or the flow cap is reached", ["service"])
ACTIVE = Gauge("shoal_ingress_active_connections", "Connections being forwarded now", ["service"])
LISTENERS = Gauge("shoal_ingress_listeners", "Published ports this agent listens on")
