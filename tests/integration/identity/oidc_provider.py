"""A small OpenID Connect provider the tests stand up on a loopback port (no offline one installs).

Discovery, authorize (the "logged-in" user is whoever the test sets), token with PKCE S256
checked, JWKS; ID tokens signed RS256 with a key made at start. It is strict where the
client must be: unknown codes, a wrong redirect URI or a wrong code verifier get 400.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode

from fastapi import FastAPI, Form, HTTPException
from fastapi.responses import RedirectResponse
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.support import LoopbackServer


@dataclass
class ProviderUser:
    sub: str
    username: str
    groups: list[str]


@dataclass
class LocalOidcProvider:
    port: int
    client_id: str
    redirect_uri: str
    user: ProviderUser | None = None
    codes: dict[str, dict] = field(default_factory=dict)
    token_requests: list[dict] = field(default_factory=list)
    tamper_nonce: bool = False

    def __post_init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-key"})
        self._server = LoopbackServer(self._app(), self.port)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/.well-known/openid-configuration")
        def discovery() -> dict:
            return {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "jwks_uri": f"{self.issuer}/jwks",
                "code_challenge_methods_supported": ["S256"],
            }

        @app.get("/jwks")
        def jwks() -> dict:
            return {"keys": [self.key.as_dict(private=False)]}

        @app.get("/authorize")
        def authorize(
            response_type: str,
            client_id: str,
            redirect_uri: str,
            state: str,
            nonce: str,
            code_challenge: str,
            code_challenge_method: str,
            scope: str = "",
        ) -> RedirectResponse:
            if (response_type, client_id, redirect_uri, code_challenge_method) != (
                "code",
                self.client_id,
                self.redirect_uri,
                "S256",
            ) or "openid" not in scope.split():
                raise HTTPException(400, "bad authorization request")
            if self.user is None:
                return RedirectResponse(
                    f"{redirect_uri}?{urlencode({'error': 'access_denied', 'state': state})}"
                )
            code = secrets.token_urlsafe(16)
            self.codes[code] = {"challenge": code_challenge, "nonce": nonce, "user": self.user}
            return RedirectResponse(f"{redirect_uri}?{urlencode({'code': code, 'state': state})}")

        @app.post("/token")
        def token(
            grant_type: str = Form(),
            code: str = Form(),
            redirect_uri: str = Form(),
            client_id: str = Form(),
            code_verifier: str = Form(),
        ) -> dict:
            self.token_requests.append({"code": code, "code_verifier": code_verifier})
            issued = self.codes.pop(code, None)
            digest = hashlib.sha256(code_verifier.encode()).digest()
            expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            if (
                issued is None
                or grant_type != "authorization_code"
                or redirect_uri != self.redirect_uri
                or client_id != self.client_id
                or expected != issued["challenge"]
            ):
                raise HTTPException(400, "invalid_grant")
            user: ProviderUser = issued["user"]
            now = int(time.time())
            claims = {
                "iss": self.issuer,
                "aud": self.client_id,
                "sub": user.sub,
                "preferred_username": user.username,
                "groups": user.groups,
                "nonce": "forged" if self.tamper_nonce else issued["nonce"],
                "iat": now,
                "exp": now + 300,
            }
            id_token = jwt.encode({"alg": "RS256", "kid": "test-key"}, claims, self.key)
            return {
                "access_token": secrets.token_urlsafe(16),
                "token_type": "Bearer",
                "id_token": id_token,
            }

        return app

    def __enter__(self) -> LocalOidcProvider:
        self._server.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._server.__exit__(*exc)
