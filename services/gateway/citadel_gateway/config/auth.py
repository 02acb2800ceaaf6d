"""Who may call: token verification (``auth``), what each route needs, and the front applications
that call for their users (``auth.forwarders``)."""

from __future__ import annotations

import fnmatch
import re
from typing import Annotated

from pydantic import Field, PrivateAttr, field_validator, model_validator

from ._base import _address_in, _cidr_list, _http_url, _Strict

Permission = str | list[str]

# A forwarder's name: the subject of its service credential and the prefix of its users'.
FORWARDER_NAME = r"^[a-z][a-z0-9-]{0,31}$"
# An HTTP header name (RFC 9110 token), lower-case as ASGI servers give it.
_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]{1,64}$")
FORWARDER_TOKEN_MIN = 16
_TOKEN = re.compile(rf"^[A-Za-z0-9._~+/-]{{{FORWARDER_TOKEN_MIN},}}=*$")  # RFC 6750 b64token


class Forwarder(_Strict):
    """A front application (OpenWebUI) that calls with a service credential of its own and names
    the user it acts for in a header. The credential is a static bearer token, accepted only from
    ``addresses`` (the client's address: behind the front, its X-Real-IP); the header counts
    only on a request with that credential from there. Elsewhere it is ignored (docs:
    services/gateway/README.md, "Users behind a forwarder")."""

    token_file: str
    addresses: list[str] = Field(min_length=1)
    user_header: str = "x-openwebui-user-id"
    # what the credential grants (auth.route_permissions): none by default
    permissions: list[str] = []
    _token: str | None = PrivateAttr(default=None)

    @field_validator("addresses")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        return _cidr_list(v)

    @field_validator("user_header")
    @classmethod
    def _header(cls, v: str) -> str:
        v = v.lower()
        if not _HEADER_NAME.match(v) or v in ("authorization", "x-real-ip", "host"):
            raise ValueError(f"{v!r} is not a header name a forwarder may set")
        return v

    @property
    def token(self) -> str | None:
        return self._token

    def allows(self, host: str | None) -> bool:
        return _address_in(host, self.addresses)


class Auth(_Strict):
    public_key_file: str | None = None
    jwks_url: str | None = None
    jwks_cache_s: float = Field(3600.0, gt=0)
    jwks_min_refetch_s: float = Field(30.0, ge=0)
    issuers: list[str] = Field(min_length=1)
    authorized_parties: list[str] = []
    audience: list[str] = []
    leeway_s: float = Field(5.0, ge=0, le=300)
    required_claims: list[str] = ["exp", "iss", "sub"]
    route_permissions: dict[str, Permission] = {}
    # what a token needs for /health?detailed=true (backend URLs, their last errors); "" or
    # null: any valid token
    health_detailed_permission: str | None = "health:detailed"
    # name -> a front application whose users count as subjects of their own (Forwarder)
    forwarders: dict[Annotated[str, Field(pattern=FORWARDER_NAME)], Forwarder] = {}
    _public_key_pem: str | None = PrivateAttr(default=None)

    @field_validator("jwks_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else _http_url(v)

    @field_validator("route_permissions")
    @classmethod
    def _patterns(cls, v: dict[str, Permission]) -> dict[str, Permission]:
        for pattern in v:
            if not pattern.startswith("/"):
                raise ValueError(f"route pattern {pattern!r} must start with '/'")
        return v

    @model_validator(mode="after")
    def _one_key_source(self) -> Auth:
        if (self.public_key_file is None) == (self.jwks_url is None):
            raise ValueError("set exactly one of public_key_file or jwks_url")
        return self

    @property
    def public_key_pem(self) -> str | None:
        return self._public_key_pem

    def permissions_for(self, path: str) -> list[str]:
        needed: list[str] = []
        for pattern, perm in self.route_permissions.items():
            if fnmatch.fnmatchcase(path, pattern):
                needed.extend([perm] if isinstance(perm, str) else perm)
        return needed
