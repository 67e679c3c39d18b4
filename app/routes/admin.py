"""Operations for admin keys only: every namespace's session counts."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter
from fastapi.routing import APIRoute

from app.keys import KeyTable
from app.responses import JsonLineResponse
from app.schemas import ErrorResponse, NamespaceSessions, NamespacesResponse
from app.scopes import ADMIN_ONLY, ADMIN_RESPONSES
from app.services import ServicesHolder


def admin_router(
    holder: ServicesHolder, keys: Callable[[], KeyTable], route_class: type[APIRoute]
) -> APIRouter:
    """The admin routes, bound to the app's services and the keys in force."""
    router = APIRouter(
        default_response_class=JsonLineResponse,
        route_class=route_class,
        tags=["admin"],
        responses={
            **ADMIN_RESPONSES,
            **{status: {"model": ErrorResponse} for status in (401, 429, 503)},
        },
    )

    @router.get("/admin/sessions", dependencies=ADMIN_ONLY)
    async def namespace_sessions() -> NamespacesResponse:
        """Live sessions per namespace (one per key), with each key's quota and name."""
        services = holder.services
        counts = await services.store.namespace_counts()
        table = keys()
        names = table.names()
        namespaces = sorted(set(counts) | set(names))
        return NamespacesResponse(
            sessions=sum(counts.values()),
            max_sessions=services.settings.max_sessions,
            namespaces=[
                NamespaceSessions(
                    namespace=namespace,
                    name=names.get(namespace),
                    sessions=counts.get(namespace, 0),
                    max_sessions=table.quota(namespace),
                )
                for namespace in namespaces
            ],
        )

    return router
