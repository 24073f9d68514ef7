"""User administration: list accounts, change a role, disable or enable an account (admins)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from ripplecast.accounts.policy import Scope
from ripplecast.accounts.service import AccountError, Accounts, Actor, NotFound
from ripplecast.db.models import Role, User
from ripplecast.http.api.framework import ApiContext, ApiRouter, Page, PageQuery
from ripplecast.http.api.problems import ApiError

__all__ = ["users_router"]


class UserAdminOut(BaseModel):
    """An account as an administrator sees it."""

    id: int
    username: str
    role: Role
    disabled: bool
    created_at: datetime


class UserPatch(BaseModel):
    """What an administrator may change."""

    role: Role | None = None
    disabled: bool | None = None


class UserId(BaseModel):
    """Path parameter: a user id."""

    id: int = Field(ge=1, le=2**62)


def _out(user: User) -> UserAdminOut:
    return UserAdminOut(
        id=user.id,
        username=user.username,
        role=user.role,
        disabled=user.disabled,
        created_at=user.created_at,
    )


def users_router(accounts: Accounts) -> ApiRouter:
    """The /users operations (admin scope and role)."""
    router = ApiRouter(tags=("users",))

    @router.get(
        "/users", summary="Every account", query=PageQuery, response=Page[UserAdminOut],
        auth=Scope.ADMIN,
    )  # fmt: skip
    async def list_users(ctx: ApiContext) -> Page[UserAdminOut]:
        query = ctx.query_as(PageQuery)
        rows, total = await accounts.users(limit=query.limit, offset=query.offset)
        return Page[UserAdminOut](
            items=[_out(u) for u in rows], total=total, limit=query.limit, offset=query.offset
        )

    @router.patch(
        "/users/{id}",
        summary="Change an account's role, or disable it (its live streams are disconnected)",
        params=UserId,
        body=UserPatch,
        response=UserAdminOut,
        auth=Scope.ADMIN,
        errors=(404,),
    )
    async def update_user(ctx: ApiContext) -> UserAdminOut:
        principal = ctx.principal
        assert principal is not None
        body = ctx.body_as(UserPatch)
        try:
            user = await accounts.update_user(
                ctx.params_as(UserId).id,
                Actor(principal.user_id, admin=principal.role == Role.ADMIN),
                role=body.role,
                disabled=body.disabled,
            )
        except NotFound as exc:
            raise ApiError(404, str(exc)) from None
        except AccountError as exc:
            raise ApiError(422, str(exc)) from None
        return _out(user)

    return router
