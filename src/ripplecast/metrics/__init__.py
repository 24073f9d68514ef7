"""Prometheus metrics of a node: `/metrics` on every role's HTTP listener.

- `specs`: every metric's name, type, help and labels, defined once; `catalog()` lists them
  (`ripplecast metrics catalog` prints it as JSON; docs/metrics.md explains each).
- `streams`, `components`: collectors that read the counters the components keep anyway, when
  Prometheus scrapes: the packet path does no metrics work.
- `node`: `NodeMetrics`, one registry per node, the few observation points (HLS segment cut,
  transcoding attempt, HTTP response head, event-loop lag) and the HTTP handler.

This package sits below the adapters (HTTP, RTMP server, edge): it reads those through the
small protocols of `sources` and imports none of them.
"""

from ripplecast.metrics.node import NodeMetrics
from ripplecast.metrics.specs import CATALOG, MetricSpec, catalog
from ripplecast.metrics.streams import StreamLabels

__all__ = ["CATALOG", "MetricSpec", "NodeMetrics", "StreamLabels", "catalog"]
