"""The REST API under /api/v1: a small typed framework (`framework`), models and operations."""

from __future__ import annotations

from ripplecast.http.api.framework import ApiContext, ApiRouter, Page, PageQuery, install_api
from ripplecast.http.api.openapi import API_PREFIX
from ripplecast.http.api.problems import ApiError, Problem
from ripplecast.http.api.streams import Publishers, streams_router

__all__ = [
    "API_PREFIX",
    "ApiContext",
    "ApiError",
    "ApiRouter",
    "Page",
    "PageQuery",
    "Problem",
    "Publishers",
    "install_api",
    "streams_router",
]
