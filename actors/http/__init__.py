"""The HTTP API over a :class:`~actors.service.JobService`: :func:`create_app` builds it;
``routes/`` holds the routes by part of the API, ``deps`` what they take, ``errors``
how every error is answered, ``middleware`` what runs before routing."""

from __future__ import annotations

from actors.http.app import create_app

__all__ = ["create_app"]
