"""Authentication against a registry: ``WWW-Authenticate`` challenges, Basic credentials
and Bearer tokens fetched from the registry's token server and cached per scope set."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import httpx
from loguru import logger

from model.registry._errors import (
    RegistryAuthError,
    error_from_response,
    error_from_transport,
)

__all__ = ["Authenticator", "Challenge", "parse_challenges", "scope_key"]

#: Lifetime of a token whose answer has no ``expires_in``, in seconds.
DEFAULT_TOKEN_TTL_S = 60.0

_SCHEME_RE = re.compile(r"\s*([A-Za-z][A-Za-z0-9._~+/-]*)\s*")
_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))\s*,?')


@dataclass(frozen=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header; ``scheme`` is lower case."""

    scheme: str
    params: dict[str, str]

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scopes(self) -> tuple[str, ...]:
        """Scopes asked for; one ``scope`` parameter may hold several, space-separated."""
        return tuple(self.params.get("scope", "").split())


def parse_challenges(headers: Iterable[str]) -> list[Challenge]:
    """All challenges of the given ``WWW-Authenticate`` header values, in order."""
    found: list[Challenge] = []
    for header in headers:
        pos = 0
        while pos < len(header):
            scheme = _SCHEME_RE.match(header, pos)
            if scheme is None:
                break
            pos = scheme.end()
            params: dict[str, str] = {}
            while True:
                param = _PARAM_RE.match(header, pos)
                if param is None:
                    break
                value = param.group(2)
                value = re.sub(r"\\(.)", r"\1", value) if value is not None else param.group(3)
                params[param.group(1).lower()] = value
                pos = param.end()
            found.append(Challenge(scheme.group(1).lower(), params))
            # Skip to the next challenge (a separating comma was eaten by the last param).
            while pos < len(header) and header[pos] in ", ":
                pos += 1
    return found


def scope_key(scopes: Iterable[str]) -> frozenset[str]:
    """A scope set in canonical form (each scope's actions sorted), for cache keys:
    distribution lists actions in no fixed order (``push,pull`` or ``pull,push``)."""
    canonical = set()
    for scope in scopes:
        kind_name, sep, actions = scope.rpartition(":")
        canonical.add(f"{kind_name}:{','.join(sorted(actions.split(',')))}" if sep else scope)
    return frozenset(canonical)


class Authenticator:
    """Chooses the ``Authorization`` header for a request and answers challenges.

    It learns the registry's scheme from the first 401 and then authenticates
    requests up front: Basic credentials, or a Bearer token cached under the scope
    set it was issued for until its ``expires_in`` has passed. Thread-safe.
    """

    def __init__(
        self,
        http: httpx.Client,
        registry: str,
        username: str | None,
        password: str | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._registry = registry
        self._basic = (
            "Basic " + base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            if username
            else None
        )
        self._username = username
        self._clock = clock
        self._lock = threading.Lock()
        self._scheme: str | None = None
        self._bearer: Challenge | None = None
        self._tokens: dict[frozenset[str], tuple[str, float]] = {}
        #: Tokens fetched from the token server so far (for tests and statistics).
        self.tokens_fetched = 0

    def headers(self, scopes: frozenset[str]) -> dict[str, str]:
        """Authorization to send up front for a request that needs ``scopes``.

        Once the registry is known to want Bearer tokens, a missing or expired token
        is fetched here, before the request, so a request body is not sent twice.
        Raises as :meth:`answer` does.
        """
        with self._lock:
            if self._scheme == "basic" and self._basic:
                return {"Authorization": self._basic}
            if self._scheme != "bearer" or self._bearer is None:
                return {}
            cached = self._tokens.get(scope_key(scopes))
            if cached is not None and cached[1] > self._clock():
                return {"Authorization": f"Bearer {cached[0]}"}
            params = {k: v for k, v in self._bearer.params.items() if k != "scope"}
        if scopes:
            params["scope"] = " ".join(sorted(scopes))
        token, ttl = self._fetch_token(Challenge("bearer", params))
        with self._lock:
            self._tokens[scope_key(scopes)] = (token, self._clock() + ttl)
        return {"Authorization": f"Bearer {token}"}

    def answer(self, response: httpx.Response, scopes: frozenset[str]) -> dict[str, str] | None:
        """Authorization to retry a request refused with 401, or ``None`` if none helps.

        A Bearer challenge fetches a fresh token for the challenge's scopes (cached under
        those and under ``scopes``). Raises :class:`RegistryAuthError` when the token
        server refuses the credentials, :class:`RegistryUnavailableError` when it cannot
        be reached.
        """
        challenges = parse_challenges(response.headers.get_list("www-authenticate"))
        bearer = next((c for c in challenges if c.scheme == "bearer" and c.realm), None)
        if bearer is not None:
            token, ttl = self._fetch_token(bearer)
            expires = self._clock() + ttl
            with self._lock:
                self._scheme, self._bearer = "bearer", bearer
                self._tokens[scope_key(bearer.scopes)] = (token, expires)
                self._tokens[scope_key(scopes)] = (token, expires)
            return {"Authorization": f"Bearer {token}"}
        if any(c.scheme == "basic" for c in challenges) and self._basic:
            with self._lock:
                self._scheme = "basic"
            # This request carried the credentials and was refused: a retry would be
            # refused again. (Judged by the request, not by what other requests learnt.)
            already = "authorization" in response.request.headers
            return None if already else {"Authorization": self._basic}
        return None

    def forget(self, scopes: frozenset[str]) -> None:
        """Drop the cached token for ``scopes`` (the registry refused it)."""
        with self._lock:
            self._tokens.pop(scope_key(scopes), None)

    def _fetch_token(self, challenge: Challenge) -> tuple[str, float]:
        """``(token, seconds it may be cached)`` from the challenge's realm."""
        realm = challenge.realm or ""
        params: list[tuple[str, str | int | float | bool | None]] = []
        if challenge.service:
            params.append(("service", challenge.service))
        params.extend(("scope", s) for s in challenge.scopes)
        if self._username:
            params.append(("account", self._username))
        headers = {"Authorization": self._basic} if self._basic else {}
        what = f"token request to {httpx.URL(realm).copy_with(query=None)}"
        logger.debug("registry {}: {} for scopes {}", self._registry, what, challenge.scopes)
        try:
            response = self._http.get(realm, params=params, headers=headers, follow_redirects=True)
        except httpx.TransportError as exc:
            raise error_from_transport(exc, what, registry=self._registry) from None
        if response.status_code != 200:
            raise error_from_response(response, what, registry=self._registry)
        try:
            body = json.loads(response.content)
            token = body.get("token") or body.get("access_token")
            expires_in = float(body.get("expires_in") or DEFAULT_TOKEN_TTL_S)
        except (ValueError, AttributeError, TypeError):
            token, expires_in = None, DEFAULT_TOKEN_TTL_S
        if not isinstance(token, str) or not token:
            raise RegistryAuthError(
                what, registry=self._registry, status=200, detail="answer holds no token"
            )
        with self._lock:
            self.tokens_fetched += 1
        # Renew a little before the server's deadline so a request never carries a
        # token that expires on the way.
        return token, max(0.0, expires_in - min(10.0, expires_in / 10))
