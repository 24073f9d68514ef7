"""The admission webhook: an operator's service that may allow or deny a publish.

`admit_publish` POSTs a signed `on_publish_admission` envelope (the same format and headers as
every delivery, see `signing`) and waits for the answer, once, within `timeout`; the publisher
waits meanwhile, so nothing is retried.

The answer:
- 2xx with an empty body, or a JSON object with `"allow": true`: allowed;
- 2xx with `{"allow": false, "reason": "..."}`: denied (the text is kept in `message`);
- 2xx with anything else (not JSON, no boolean `allow`, over `MAX_ANSWER_BYTES`): denied, a
  malformed answer is the service's bug and not a reason to let anyone in;
- 3xx (never followed) and 4xx: denied;
- no answer (timeout, connection refused, DNS) and 5xx, i.e. the service is unavailable:
  denied by default (fail closed), allowed with `fail_open=True` for operators who prefer the
  show to go on when their service is down.

`reason` is a short stable token (for counters and logs); `message` is the service's text,
printable and at most `MAX_MESSAGE_LENGTH` characters (it may be shown to the publisher).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp

from ripplecast.webhooks.net import new_client_session, redact_url, require_url
from ripplecast.webhooks.signing import encode_envelope, new_event_id, request_headers

log = logging.getLogger("ripplecast.webhooks.admission")

ADMISSION_EVENT = "on_publish_admission"
MAX_ANSWER_BYTES = 64 * 1024
MAX_MESSAGE_LENGTH = 200


@dataclass(frozen=True, slots=True)
class AdmissionResult:
    """The admission service's verdict on one publish."""

    allowed: bool
    reason: str
    """ok, denied, http_NNN, bad_answer or unavailable."""
    message: str = ""
    """The service's own reason for a denial (sanitised), else empty."""
    status: int | None = None
    """The HTTP status answered, None if there was no answer."""


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:MAX_MESSAGE_LENGTH])


def _judge(status: int, body: bytes) -> AdmissionResult:
    """The verdict for a 2xx answer with `body` (at most MAX_ANSWER_BYTES + 1 bytes)."""
    if len(body) > MAX_ANSWER_BYTES:
        return AdmissionResult(False, "bad_answer", "answer too large", status)
    if not body.strip():
        return AdmissionResult(True, "ok", "", status)
    try:
        answer = json.loads(body)
    except ValueError:
        return AdmissionResult(False, "bad_answer", "answer is not JSON", status)
    allow = answer.get("allow") if isinstance(answer, dict) else None
    if allow is True:
        return AdmissionResult(True, "ok", "", status)
    if allow is False:
        reason = answer.get("reason")
        message = _printable(reason) if isinstance(reason, str) else ""
        return AdmissionResult(False, "denied", message, status)
    return AdmissionResult(False, "bad_answer", 'answer has no boolean "allow"', status)


async def admit_publish(
    url: str,
    secret: bytes,
    payload: Mapping[str, object],
    *,
    timeout: float,  # noqa: ASYNC109  (a per-request bound handed to aiohttp, not a deadline)
    fail_open: bool = False,
    session: aiohttp.ClientSession | None = None,
    allow_private: bool = True,
    clock: Callable[[], float] = time.time,
) -> AdmissionResult:
    """Ask the admission service at `url` whether the publish described by `payload` may go
    ahead (see module docstring). Uses `session` if given, else a short-lived one.

    `allow_private` defaults to True: this URL is the operator's (a setting), not a user's.
    Raises `WebhookURLError` for a URL `check_url` refuses (a configuration error), and
    `TypeError`/`ValueError` for a payload that is not JSON; any failure of the service is a
    verdict, never an exception.
    """
    require_url(url, allow_private=allow_private)
    event_id = new_event_id()
    now = clock()
    body = encode_envelope(ADMISSION_EVENT, event_id, now, payload)
    headers = request_headers(
        secret, event=ADMISSION_EVENT, event_id=event_id, timestamp=int(now), body=body
    )
    if session is None:
        async with new_client_session(allow_private=allow_private, limit=4) as own:
            result = await _ask(own, url, headers, body, timeout, fail_open)
    else:
        result = await _ask(session, url, headers, body, timeout, fail_open)
    if not result.allowed or result.reason != "ok":
        log.info(
            "admission url=%s id=%s: %s (%s) %s",
            redact_url(url),
            event_id,
            "allowed" if result.allowed else "denied",
            result.reason,
            result.message,
        )
    return result


async def _ask(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body: bytes,
    seconds: float,
    fail_open: bool,
) -> AdmissionResult:
    try:
        async with session.post(
            url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=seconds),
            allow_redirects=False,
        ) as response:
            status = response.status
            if 200 <= status < 300:
                return _judge(status, await response.content.read(MAX_ANSWER_BYTES + 1))
    except TimeoutError:
        return AdmissionResult(fail_open, "unavailable", f"no answer within {seconds:g} s")
    except aiohttp.ClientError as exc:
        return AdmissionResult(fail_open, "unavailable", type(exc).__name__)
    if status >= 500:
        return AdmissionResult(fail_open, "unavailable", f"HTTP {status}", status)
    return AdmissionResult(False, f"http_{status}", "", status)
