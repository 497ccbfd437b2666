"""The gateway's configuration file (``--config FILE``, YAML); command-line options override it.

Detection thresholds and actions are not here: they come from the same policy file as
``scan`` (``policy:``), so that the gateway and the scan cannot disagree about them.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from distillguard import yamlfile
from distillguard.errors import UserError


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    upstream: str = Field(..., description="base URL of the model API; the request's path (/v1/...) is appended")
    upstream_api_key: str | None = Field(
        None, description="sent upstream instead of the client's key (default: DISTILLGUARD_UPSTREAM_KEY)")
    fallback_model: str | None = Field(None, description="model that 'fallback' verdicts are served with")
    live_reference: str | None = Field(None, description="live routing's reference of organic traffic (distillguard "
                                       "gateway calibrate --out FILE), re-read when it changes; none: no live routing")
    policy: str | None = Field(None, description="the policy YAML shared with scan")
    verdicts: str | None = Field(None, description="a scan's --out directory; reloaded when the scan rewrites it")
    db: str = "distillguard.duckdb"
    log_dir: str | None = Field(None, description="exchange log segments (default: <db>.gateway-log)")
    keys: str | None = Field(None, description="keys file (CSV or YAML); the store's api_keys table is read too")
    trusted_proxies: list[str] = Field(default_factory=list,
                                       description="CIDRs whose X-Forwarded-For is believed")
    asn_header: str | None = Field(
        None, description="request header carrying the client's autonomous system number (e.g. set by a CDN "
                          "rule), logged as client_asn; believed only from trusted_proxies")
    geoip: str | None = Field(
        None, description="a MaxMind database (GeoIP2 or GeoLite2 Country or City, .mmdb) that gives the client's "
        "country to country controls (/admin/controls); none: country controls are inert")
    on_log_failure: Literal["closed", "open"] = Field(
        "closed", description="when the exchange log cannot be written: refuse requests (closed) or serve "
        "them unlogged (open); either way the gateway's log says so")
    admin_token: str | None = Field(None, description="bearer token of /admin (default: DISTILLGUARD_ADMIN_TOKEN, "
                                    "or the first line of admin_token_file); none: the admin API is off")
    admin_token_file: str | None = Field(None, description="file whose first line is the admin token (never pass "
                                         "the token itself on a command line: every user of the machine sees it)")
    admin_port: int | None = Field(None, ge=1, le=65535, description="serve /admin/* and /metrics on their own "
                                   "listener on this port; none: on the main port, /metrics behind the admin token")
    admin_host: str = Field("127.0.0.1", description="address of the admin listener")
    state_dir: str | None = Field(None, description="the gateway's own durable state (operators' overrides); "
                                  "default: <db>.gateway-state beside the store")
    shutdown_timeout_seconds: float = Field(
        10.0, ge=0, description="on SIGTERM, how long requests in flight (streams) may still run before they are cut")
    state: str | None = Field(None, description="redis://... to share counters, overrides and inherited "
                              "actions between gateway processes; default: in this process")
    connect_timeout_seconds: float = Field(10.0, gt=0)
    max_request_bytes: int = Field(64 * 1024 * 1024, gt=0,
                                   description="largest request body accepted; a larger one is answered 413")
    client_read_timeout_seconds: float = Field(
        30.0, gt=0, description="a request's body must arrive within this; a client that stalls mid-body is "
                                "answered 408 and its connection closed")
    header_read_timeout_seconds: float = Field(
        30.0, gt=0, description="a request's headers must arrive within this, from connecting or from the previous "
                                "answer on the connection; otherwise the connection is closed (an idle keep-alive "
                                "connection too)")
    upstream_timeout_seconds: float = Field(600.0, gt=0)
    fsync_seconds: float = Field(0.05, gt=0)
    load_every_seconds: float = Field(5.0, gt=0)
    segment_seconds: float = Field(30.0, gt=0)
    reload_every_seconds: float = Field(1.0, gt=0)

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)
        return value

    @field_validator("upstream")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/")

    @property
    def journal_dir(self) -> Path:
        if self.log_dir:
            return Path(self.log_dir)
        db = Path(self.db)
        return db.with_name(db.stem + ".gateway-log")

    @property
    def overrides_dir(self) -> Path:
        if self.state_dir:
            return Path(self.state_dir)
        db = Path(self.db)
        return db.with_name(db.stem + ".gateway-state")


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> GatewayConfig:
    """The config file (if any) with the command line's non-None values over it."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = yamlfile.read(path, "gateway config") or {}
        if not isinstance(raw, dict):
            raise UserError(f"{path}: expected a mapping of settings")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    raw.setdefault("upstream_api_key", os.environ.get("DISTILLGUARD_UPSTREAM_KEY"))
    if raw.get("admin_token_file") and not raw.get("admin_token"):
        raw["admin_token"] = read_token(Path(raw["admin_token_file"]))
    raw.setdefault("admin_token", os.environ.get("DISTILLGUARD_ADMIN_TOKEN") or None)
    if not raw.get("upstream"):
        raise UserError("the gateway needs --upstream URL (or upstream: in --config)")
    config = yamlfile.validated(GatewayConfig, raw, path or "command line", "gateway setting")
    if config.overrides_dir.resolve() == config.journal_dir.resolve():
        raise UserError(f"{path or 'command line'}: state_dir and log_dir are both {config.journal_dir}: the "
                        "exchange log's loader takes the files of its directory, the overrides need one of their own")
    return config


def read_token(path: Path) -> str:
    """The admin token: the first line of ``path`` (surrounding blanks dropped)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the admin token file ({exc})") from None
    token = lines[0].strip() if lines else ""
    if not token:
        raise UserError(f"{path}: the admin token file is empty")
    return token
