"""The account pages: `/login`, `/register`, `/logout` and `/account/password`.

Invariants: the login and register forms are served with the pre-login CSRF cookie, so they
are protected before there is a session; a login only ever goes on to a page of this site
(`safe_next`); the session cookie is HttpOnly and lives as long as the session.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

from aiohttp import web

from ripplecast.accounts.logins import LoginRefused, Logins
from ripplecast.accounts.service import AccountError, Conflict
from ripplecast.http.live import SESSION_COOKIE
from ripplecast.http.pages.base import (
    PageContext,
    form_text,
    log,
    see_other,
    set_private_cookie,
)
from ripplecast.web.views import (
    FormError,
    PageError,
    Redirect,
    Visitor,
    notice_text,
    password_field,
    safe_next,
    text_field,
)

__all__ = ["AccountPages"]


class AccountPages:
    """Signing in and out, creating an account, changing one's password."""

    def __init__(self, context: PageContext, *, logins: Logins) -> None:
        self._ctx = context
        self._logins = logins

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Add this group's routes to `router`."""
        page = self._ctx.page
        router.add_get("/login", page(self.login_form, form_cookie=True))
        router.add_post("/login", page(self.login))
        router.add_get("/register", page(self.register_form, form_cookie=True))
        router.add_post("/register", page(self.register_account))
        router.add_post("/logout", page(self.logout))
        router.add_get("/account/password", page(self.password_form))
        router.add_post("/account/password", page(self.change_password))

    async def login_form(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """The login form."""
        registered = request.query.get("registered", "")[:64]
        return self._login_page(
            visitor,
            username=registered,
            target=safe_next(request.query.get("next")),
            notice="Account created: log in." if registered else "",
        )

    async def login(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Check the credentials, open a session (cookie) and go on to `next`."""
        form = await self._ctx.form(request, visitor)
        target = safe_next(form_text(form, "next"))
        try:
            username = text_field(form, "username", label="User name", max_length=64)
            password = password_field(form, "password", label="Password")
        except FormError as exc:
            return self._login_page(visitor, username="", target=target, error=str(exc), status=422)
        try:
            session = await self._logins.login(
                username,
                password,
                ip=request.remote or "",
                user_agent=request.headers.get("User-Agent", ""),
            )
        except LoginRefused as exc:
            if exc.retry_after:
                wait = int(exc.retry_after)
                error = f"Too many failed logins: try again in {wait} s"
                response = self._login_page(
                    visitor, username=username, target=target, error=error, status=429
                )
                response.headers["Retry-After"] = str(wait)
                return response
            error = "Invalid user name or password."
            return self._login_page(
                visitor, username=username, target=target, error=error, status=422
            )
        response = see_other(target)
        max_age = int((session.expires_at - datetime.now(UTC)).total_seconds())
        set_private_cookie(
            response, request, SESSION_COOKIE, session.session_id, max_age=max(max_age, 0)
        )
        log.info("web login user=%s", session.username)
        return response

    def _login_page(
        self,
        visitor: Visitor,
        *,
        username: str,
        target: str,
        notice: str = "",
        error: str = "",
        status: int = 200,
    ) -> web.Response:
        return self._ctx.render(
            visitor,
            "login.html",
            status=status,
            username=username,
            next=target,
            notice=notice,
            error=error,
        )

    async def logout(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """End the session."""
        await self._ctx.form(request, visitor)
        if visitor.session_id:
            await self._logins.logout(visitor.session_id)
        response = see_other("/")
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    async def register_form(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """The form to create an account."""
        self._need_registration()
        return self._ctx.render(visitor, "register.html", username="")

    async def register_account(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Create an account, then on to the login form."""
        self._need_registration()
        form = await self._ctx.form(request, visitor)
        username = form_text(form, "username").strip()[:64]
        try:
            username = text_field(form, "username", label="User name", max_length=64, required=True)
            password = password_field(form, "password", label="Password", required=True)
            if password != form_text(form, "confirm"):
                raise FormError("The two passwords differ.")
            await self._ctx.accounts.create_user(username, password)
        except (FormError, AccountError) as exc:
            status = 409 if isinstance(exc, Conflict) else 422
            return self._ctx.render(
                visitor, "register.html", status=status, error=str(exc), username=username
            )
        log.info("web account created user=%s", username)
        raise Redirect("/login?" + urlencode({"registered": username}))

    def _need_registration(self) -> None:
        if not self._ctx.settings.registration_open:
            raise PageError(403, "Registration is closed on this server.")

    async def password_form(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """The form to change one's password."""
        _ = visitor.user
        notice = notice_text(request.query.get("msg"))
        return self._ctx.render(visitor, "password.html", notice=notice)

    async def change_password(self, request: web.Request, visitor: Visitor) -> web.StreamResponse:
        """Change the password; every other session of the account ends."""
        user = visitor.user
        form = await self._ctx.form(request, visitor)
        try:
            current = password_field(form, "current", label="Current password")
            new = password_field(form, "new", label="New password", required=True)
            if new != form_text(form, "confirm"):
                raise FormError("The two new passwords differ.")
            await self._logins.change_password(
                user.user_id, current, new, keep_session=visitor.session_id
            )
        except (FormError, AccountError) as exc:
            return self._ctx.render(visitor, "password.html", status=422, error=str(exc))
        raise Redirect("/account/password?msg=password-changed")
