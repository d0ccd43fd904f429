"""OpenID Connect login: authorization-code flow with PKCE (S256), groups from an ID-token claim.

``start`` sends the browser to the provider with a fresh ``state``, ``nonce`` and PKCE
challenge (kept here, in memory, for ten minutes); ``finish`` takes the code back,
redeems it with the verifier at the token endpoint and checks the ID token (signature
against the provider's JWKS, issuer, audience, expiry, nonce) before the user is
provisioned like an LDAP user. The provider is reached directly (``trust_env=False``).
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlencode

import httpx

from services.gateway.auth_external import ExternalIdentity
from services.gateway.errors import BadRequest, Unauthorized, UpstreamUnavailable
from services.settings import Settings

PENDING_TTL_S = 600.0
MAX_PENDING = 10_000


@dataclass(frozen=True)
class _Pending:
    verifier: str
    nonce: str
    created: float


class OidcFlow:
    def __init__(self, settings: Settings):
        if not (settings.auth_oidc_issuer and settings.auth_oidc_client_id):
            raise ValueError("OIDC needs auth_oidc_issuer and auth_oidc_client_id")
        self._settings = settings
        self._issuer = settings.auth_oidc_issuer.rstrip("/")
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._metadata: dict | None = None

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=10.0, trust_env=False)

    async def metadata(self) -> dict:
        if self._metadata is None:
            try:
                async with self._client() as client:
                    response = await client.get(f"{self._issuer}/.well-known/openid-configuration")
                    response.raise_for_status()
                    self._metadata = response.json()
            except httpx.HTTPError as exc:
                raise UpstreamUnavailable(f"the identity provider is unreachable: {exc}") from exc
        return self._metadata

    async def start(self) -> str:
        """The provider's authorization URL for a new login."""
        from authlib.oauth2.rfc7636 import create_s256_code_challenge

        metadata = await self.metadata()
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(64)
        now = time.monotonic()
        with self._lock:
            self._pending = {
                k: v for k, v in self._pending.items() if now - v.created < PENDING_TTL_S
            }
            if len(self._pending) >= MAX_PENDING:
                raise BadRequest("too many logins in progress; try again in a few minutes")
            self._pending[state] = _Pending(verifier, nonce, now)
        query = {
            "response_type": "code",
            "client_id": self._settings.auth_oidc_client_id,
            "redirect_uri": self._settings.auth_oidc_redirect_url,
            "scope": self._settings.auth_oidc_scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": create_s256_code_challenge(verifier),
            "code_challenge_method": "S256",
        }
        return f"{metadata['authorization_endpoint']}?{urlencode(query)}"

    async def finish(self, code: str, state: str) -> ExternalIdentity:
        """Redeem the code (with the PKCE verifier) and return the checked identity."""
        with self._lock:
            pending = self._pending.pop(state, None)
        if pending is None or time.monotonic() - pending.created > PENDING_TTL_S:
            raise Unauthorized("unknown or expired login state; start the login again")
        metadata = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self._settings.auth_oidc_redirect_url,
            "client_id": self._settings.auth_oidc_client_id,
            "code_verifier": pending.verifier,
        }
        if self._settings.auth_oidc_client_secret:
            form["client_secret"] = self._settings.auth_oidc_client_secret
        try:
            async with self._client() as client:
                token = await client.post(metadata["token_endpoint"], data=form)
                if token.status_code != 200:
                    raise Unauthorized("the identity provider refused the login code")
                keys = (await client.get(metadata["jwks_uri"])).json()
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"the identity provider is unreachable: {exc}") from exc
        id_token = token.json().get("id_token")
        if not id_token:
            raise Unauthorized("the identity provider sent no ID token")
        return self._identity(id_token, keys, pending.nonce, metadata.get("issuer", self._issuer))

    def _identity(self, id_token: str, keys: dict, nonce: str, issuer: str) -> ExternalIdentity:
        from joserfc import jwt
        from joserfc.errors import JoseError
        from joserfc.jwk import KeySet

        try:
            key_set = KeySet.import_key_set(cast(Any, keys))
            token = jwt.decode(id_token, key_set, algorithms=["RS256", "ES256"])
            jwt.JWTClaimsRegistry(
                leeway=60,
                iss={"essential": True, "value": issuer},
                aud={"essential": True, "value": str(self._settings.auth_oidc_client_id)},
                exp={"essential": True},
                nonce={"essential": True, "value": nonce},
            ).validate(token.claims)
        except (JoseError, ValueError) as exc:
            raise Unauthorized(f"the ID token is not valid: {type(exc).__name__}") from exc
        claims = token.claims
        username = str(claims.get("preferred_username") or claims["sub"])[:150]
        raw_groups = claims.get(self._settings.auth_oidc_groups_claim) or []
        if isinstance(raw_groups, str):
            raw_groups = [raw_groups]
        return ExternalIdentity(username, tuple(sorted(str(g) for g in raw_groups)), "oidc")
