"""What every part of the config shares: the strict base model, the error the loader raises,
and the checks of URLs, CIDRs and secret files."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict


class ConfigError(Exception):
    """A config problem, already formatted as ``file: field.path: problem`` lines."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        super().__init__("; ".join(lines))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


def _read_secret(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None


def _cidr_list(v: list[str]) -> list[str]:
    for cidr in v:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ValueError(f"{cidr!r} is not a CIDR") from None
    return v


def _address_in(host: str | None, cidrs: list[str]) -> bool:
    """``host`` is an IP address inside one of ``cidrs``."""
    if not host or not cidrs:
        return False
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(addr in ipaddress.ip_network(c, strict=False) for c in cidrs)


def _set_private(model: BaseModel, name: str, value: str | None) -> None:
    private = model.__pydantic_private__
    assert private is not None
    private[name] = value
