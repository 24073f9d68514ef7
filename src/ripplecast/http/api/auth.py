"""Authentication operations: register, log in and out, who am I, change password, API tokens.

The session cookie is HttpOnly, SameSite=Lax, Secure behind TLS, and lives as long as the
session. Login answers the session's CSRF token, which every later change made with the cookie
must carry (`X-CSRF-Token`). Too many failed logins answer 429 with `Retry-After` and the wait
in words; the business rules themselves live in `accounts` (Logins, Accounts).
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, Field

from ripplecast.accounts.csrf import csrf_token
from ripplecast.accounts.logins import LoginRefused, Logins
from ripplecast.accounts.policy import Principal, Scope
from ripplecast.accounts.service import AccountError, Accounts, Conflict, NotFound
from ripplecast.http.api.framework import ApiContext, ApiRouter
from ripplecast.http.api.models import Text
from ripplecast.http.api.problems import ApiError
from ripplecast.http.live import SESSION_COOKIE

__all__ = ["auth_router"]


class Credentials(BaseModel):
    """A user name and password."""

    username: Text = Field(min_length=1, max_length=64)
    password: Text = Field(min_length=1, max_length=1024)


class UserOut(BaseModel):
    """An account as its owner sees it."""

    id: int
    username: str
    role: str


class LoginOut(BaseModel):
    """A new session (the id itself is in the HttpOnly cookie only)."""

    user: UserOut
    csrf_token: str
    expires_at: datetime


class PasswordChange(BaseModel):
    """The current password and the new one."""

    current: Text = Field(min_length=1, max_length=1024)
    new: Text = Field(min_length=1, max_length=1024)


class TokenIn(BaseModel):
    """A token to make: its name and what it may do."""

    name: Text = Field(min_length=1, max_length=100)
    scopes: list[Scope] = Field(min_length=1, max_length=3)


class TokenOut(BaseModel):
    """A token as listed (never the token itself)."""

    id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool


class NewTokenOut(BaseModel):
    """A token just made: `token` is shown this once."""

    id: int
    name: str
    token: str
    scopes: list[str]


class TokenList(BaseModel):
    """The caller's tokens."""

    items: list[TokenOut]


class TokenId(BaseModel):
    """Path parameter: a token id."""

    id: int = Field(ge=1, le=2**62)


def _me(principal: Principal | None) -> Principal:
    if principal is None:  # the framework checked auth; this is for the type checker
        raise ApiError(401, "authentication required")
    return principal


def auth_router(
    accounts: Accounts, logins: Logins, *, secret: bytes, registration_open: bool
) -> ApiRouter:
    """The /auth and /tokens operations."""
    router = ApiRouter(tags=("auth",))

    @router.post(
        "/auth/login",
        summary="Log in: opens a session (cookie) and returns its CSRF token",
        body=Credentials,
        response=LoginOut,
        errors=(401, 429),
    )
    async def login(ctx: ApiContext) -> LoginOut:
        body = ctx.body_as(Credentials)
        request = ctx.request
        try:
            session = await logins.login(
                body.username,
                body.password,
                ip=request.remote or "",
                user_agent=request.headers.get("User-Agent", ""),
            )
        except LoginRefused as exc:
            if exc.retry_after:
                raise ApiError(
                    429, str(exc), headers={"Retry-After": str(int(exc.retry_after))}
                ) from None
            # HTTP requires a challenge with every 401.
            challenge = {"WWW-Authenticate": 'Bearer realm="ripplecast"'}
            raise ApiError(401, str(exc), headers=challenge) from None
        user = await accounts.user(session.username)
        max_age = int(
            (session.expires_at - datetime.now(session.expires_at.tzinfo)).total_seconds()
        )

        def cookie(response: web.StreamResponse) -> None:
            response.set_cookie(
                SESSION_COOKIE,
                session.session_id,
                max_age=max_age,
                path="/",
                httponly=True,
                samesite="Lax",
                secure=request.secure,
            )

        ctx.finish.append(cookie)
        return LoginOut(
            user=UserOut(id=user.id, username=user.username, role=user.role),
            csrf_token=csrf_token(secret, session.session_id),
            expires_at=session.expires_at,
        )

    @router.post("/auth/logout", summary="Log out: ends the session", response=None, status=204)
    async def logout(ctx: ApiContext) -> None:
        session_id = ctx.request.cookies.get(SESSION_COOKIE, "")
        if session_id:
            await logins.logout(session_id)
        ctx.finish.append(lambda response: response.del_cookie(SESSION_COOKIE, path="/"))

    @router.post(
        "/auth/register",
        summary="Create an account (when registration is open)",
        body=Credentials,
        response=UserOut,
        status=201,
        errors=(403, 409),
    )
    async def register(ctx: ApiContext) -> UserOut:
        if not registration_open:
            raise ApiError(403, "registration is closed on this server")
        body = ctx.body_as(Credentials)
        try:
            user = await accounts.create_user(body.username, body.password)
        except Conflict as exc:
            raise ApiError(409, str(exc)) from None
        except AccountError as exc:
            raise ApiError(422, str(exc)) from None
        return UserOut(id=user.id, username=user.username, role=user.role)

    @router.get(
        "/auth/me", summary="Who the credentials belong to", response=UserOut, auth=Scope.READ
    )
    async def me(ctx: ApiContext) -> UserOut:
        principal = _me(ctx.principal)
        return UserOut(id=principal.user_id, username=principal.username, role=principal.role)

    @router.post(
        "/auth/password",
        summary="Change the password; every other session ends",
        body=PasswordChange,
        response=None,
        status=204,
        auth=Scope.PUBLISH,  # a change: tokens limited to reading may not make it
    )
    async def change_password(ctx: ApiContext) -> None:
        principal = _me(ctx.principal)
        body = ctx.body_as(PasswordChange)
        try:
            await logins.change_password(
                principal.user_id,
                body.current,
                body.new,
                keep_session=ctx.request.cookies.get(SESSION_COOKIE, ""),
            )
        except AccountError as exc:
            raise ApiError(422, str(exc)) from None

    @router.get("/tokens", summary="Your API tokens", response=TokenList, auth=Scope.READ)
    async def list_tokens(ctx: ApiContext) -> TokenList:
        principal = _me(ctx.principal)
        rows = await logins.api_tokens(principal.user_id)
        return TokenList(
            items=[
                TokenOut(
                    id=row.id,
                    name=row.name,
                    prefix=row.prefix,
                    scopes=list(row.scopes),
                    created_at=row.created_at,
                    last_used_at=row.last_used_at,
                    revoked=row.revoked_at is not None,
                )
                for row in rows
            ]
        )

    @router.post(
        "/tokens",
        summary="Make an API token (shown once)",
        body=TokenIn,
        response=NewTokenOut,
        status=201,
        auth=Scope.PUBLISH,
        errors=(409,),
    )
    async def create_token(ctx: ApiContext) -> NewTokenOut:
        principal = _me(ctx.principal)
        body = ctx.body_as(TokenIn)
        if Scope.ADMIN in body.scopes and principal.role != "admin":
            raise ApiError(403, "only administrators may make admin tokens")
        try:
            made = await logins.create_api_token(principal.user_id, body.name, body.scopes)
        except AccountError as exc:
            raise ApiError(409, str(exc)) from None
        return NewTokenOut(id=made.id, name=made.name, token=made.token, scopes=list(made.scopes))

    @router.delete(
        "/tokens/{id}",
        summary="Revoke one of your API tokens",
        params=TokenId,
        response=None,
        status=204,
        auth=Scope.PUBLISH,
        errors=(404,),
    )
    async def revoke_token(ctx: ApiContext) -> None:
        principal = _me(ctx.principal)
        try:
            await logins.revoke_api_token(principal.user_id, ctx.params_as(TokenId).id)
        except NotFound as exc:
            raise ApiError(404, str(exc)) from None

    return router
