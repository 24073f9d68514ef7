"""Webhooks: events (on_publish, on_unpublish, on_play, on_stop, ...) POSTed as signed JSON to
the endpoints users register, and the optional admission webhook that may deny a publish.

- `signing`: the envelope, headers and `Ripplecast-Signature` (sign/verify), no I/O.
- `net`: which URLs may be called (`check_url`, the public-address resolver) and the client.
- `endpoints`: who receives what (`EndpointSource`, `DatabaseEndpoints`, `StaticEndpoints`).
- `dispatcher`: `WebhookDispatcher`, the bounded, non-blocking, retrying delivery queue.
- `admission`: `admit_publish`, one synchronous question per publish.

The package sits beside `accounts`: above `db`, below the adapters and `app`. Adapters do not
import it; they receive an `emit(event, payload)` callable (and an admission callable).
"""

from __future__ import annotations

from ripplecast.webhooks.admission import ADMISSION_EVENT, AdmissionResult, admit_publish
from ripplecast.webhooks.dispatcher import (
    EVENTS,
    ON_PLAY,
    ON_PUBLISH,
    ON_STOP,
    ON_UNPUBLISH,
    DispatcherStats,
    WebhookDispatcher,
)
from ripplecast.webhooks.endpoints import (
    DatabaseEndpoints,
    DeliveryOutcome,
    Endpoint,
    EndpointSource,
    StaticEndpoints,
)
from ripplecast.webhooks.net import WebhookError, WebhookURLError, check_url, require_url
from ripplecast.webhooks.signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    sign,
    verify,
)

__all__ = [
    "ADMISSION_EVENT",
    "DELIVERY_HEADER",
    "EVENTS",
    "EVENT_HEADER",
    "ON_PLAY",
    "ON_PUBLISH",
    "ON_STOP",
    "ON_UNPUBLISH",
    "SIGNATURE_HEADER",
    "AdmissionResult",
    "DatabaseEndpoints",
    "DeliveryOutcome",
    "DispatcherStats",
    "Endpoint",
    "EndpointSource",
    "StaticEndpoints",
    "WebhookDispatcher",
    "WebhookError",
    "WebhookURLError",
    "admit_publish",
    "check_url",
    "require_url",
    "sign",
    "verify",
]
