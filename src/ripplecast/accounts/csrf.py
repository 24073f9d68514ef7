"""CSRF tokens bound to a session: HMAC-SHA256(secret, "csrf" + session hash), stateless.

A request authenticated by the session cookie must also carry this token (a form field or the
`X-CSRF-Token` header) to change anything; another site can make the browser send the cookie
but cannot read the token. Requests with a bearer API token need none: no browser sends it by
itself.
"""

from __future__ import annotations

import hashlib
import hmac

from ripplecast.accounts.credentials import token_hash

HEADER = "X-CSRF-Token"
FORM_FIELD = "csrf_token"


def csrf_token(secret: bytes, session_id: str) -> str:
    """The CSRF token for the session whose cookie value is `session_id`."""
    message = b"csrf:" + token_hash(session_id).encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def check_csrf(secret: bytes, session_id: str, token: str) -> bool:
    """True if `token` is the session's CSRF token (constant-time)."""
    if not session_id or not token:
        return False
    return hmac.compare_digest(csrf_token(secret, session_id).encode(), token.encode())
