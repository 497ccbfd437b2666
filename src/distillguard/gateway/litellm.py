"""distillguard inside a LiteLLM proxy: the same verdicts, inheritance and limits as
``distillguard serve``, applied in LiteLLM's pre-call hook, and every exchange logged in the
canonical schema into the same kind of durable log and store.

For providers already running the LiteLLM proxy, so that they need not put a second proxy in
front of it. In the proxy's config.yaml::

    litellm_settings:
      callbacks: distillguard.gateway.litellm.guard

and the distillguard side in a YAML file named by ``DISTILLGUARD_LITELLM_CONFIG`` (the
gateway's settings, docs/gateway.md, without ``upstream``: LiteLLM is the proxy)::

    db: distillguard.duckdb
    verdicts: scan-out/
    policy: policy.yaml
    fallback_model: safe-small      # a model_name of LiteLLM's model_list

The account is LiteLLM's user of the key (``user_id``; else the key's alias, else its hash),
the organisation its team or organisation; the client IP and user agent are the ones LiteLLM
records in the request's metadata. Refusals are LiteLLM errors with the gateway's statuses:
429 with Retry-After for throttle, 403 for block; fallback swaps the request's model.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from distillguard.gateway.config import GatewayConfig
from distillguard.gateway.enforce import Enforcer, Request, ScanOutputs, refusal
from distillguard.gateway.journal import Journal, JournalError, Loader
from distillguard.gateway.keys import KeyRecord
from distillguard.gateway.limits import MemoryCounters, RedisCounters
from distillguard.gateway.protocol import Client, exchange_row, new_exchange_id, request_facts, usage
from distillguard.detect.policy import load_policy

try:  # LiteLLM is an optional extra: distillguard[litellm]
    from fastapi import HTTPException
    from litellm.integrations.custom_logger import CustomLogger
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError("distillguard.gateway.litellm needs LiteLLM: pip install 'distillguard[litellm]'") from exc

log = logging.getLogger("distillguard.litellm")

#: LiteLLM call types -> the API family whose request shape they carry (protocol.ROUTES)
_API = {"completion": "chat", "acompletion": "chat", "text_completion": "completions",
        "atext_completion": "completions", "responses": "responses", "aresponses": "responses",
        "anthropic_messages": "messages"}
_STASH = "distillguard"


def _settings(path: str | None) -> GatewayConfig:
    raw: dict[str, Any] = {}
    if path:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    # LiteLLM is the proxy: there is no upstream of ours (a placeholder satisfies the model)
    return GatewayConfig.model_validate({"upstream": "http://litellm.invalid"} | raw)


def _metadata(data: dict) -> dict:
    for name in ("metadata", "litellm_metadata"):
        if isinstance(data.get(name), dict):
            return data[name]
    return data.setdefault("metadata", {})


class DistillguardGuard(CustomLogger):
    """The pre-call hook decides; the success and failure hooks log the exchange."""

    def __init__(self, config_path: str | None = None) -> None:
        super().__init__()
        self.config = _settings(config_path or os.environ.get("DISTILLGUARD_LITELLM_CONFIG"))
        self.policy = load_policy(self.config.policy)
        counters = MemoryCounters()
        if self.config.state:
            import redis.asyncio as redis_asyncio

            counters = RedisCounters(redis_asyncio.from_url(self.config.state))
        self.scan = ScanOutputs(self.config.verdicts)
        self.enforcer = Enforcer(self.policy, self.scan, counters)
        self.journal = Journal(self.config.journal_dir, self.config.fsync_seconds)
        self.loader = Loader(self.journal, self.config.db, self.config.load_every_seconds,
                             self.config.segment_seconds)
        self.loader.start()
        atexit.register(self._drain)
        self._checked = 0.0

    def _drain(self) -> None:
        """At exit: the open segment into the store (kept on disk if the store is busy)."""
        self.loader.stop(drain=True)
        self.journal.close()

    # --- who and what -----------------------------------------------------------------------

    @staticmethod
    def _who(key: Any) -> KeyRecord:
        token = getattr(key, "token", None) or getattr(key, "api_key", None) or "anonymous"
        account = (getattr(key, "user_id", None) or getattr(key, "key_alias", None) or getattr(key, "end_user_id", None)
                   or f"litellm-key-{str(token)[:16]}")
        org = getattr(key, "org_id", None) or getattr(key, "team_id", None)
        digest = token if len(str(token)) == 64 else hashlib.sha256(str(token).encode()).hexdigest()
        return KeyRecord(digest, str(account), organization_id=org)

    # --- hooks ------------------------------------------------------------------------------

    async def async_pre_call_hook(self, user_api_key_dict, cache, data: dict, call_type: str):
        now = time.monotonic()
        if now - self._checked >= self.config.reload_every_seconds:
            self._checked = now
            await asyncio.to_thread(self.enforcer.refresh)
        who = self._who(user_api_key_dict)
        api = _API.get(str(call_type), "chat")
        facts = request_facts(api, data, who.account_id)
        meta = _metadata(data)
        ip = meta.get("requester_ip_address") or None
        if ip and "," in ip:
            ip = ip.split(",")[0].strip()
        started = datetime.now(UTC)
        decision = await self.enforcer.decide(Request(who.account_id, who.organization_id, None, None, None, ip,
                                                      facts.system_prompt, facts.prompt, started))
        stash = {"id": new_exchange_id("litellm-", started), "started": started, "who": who, "ip": ip,
                 "ua": meta.get("user_agent") or None, "facts": facts, "t0": time.perf_counter(),
                 "action": decision.action}
        meta[_STASH] = stash
        # the exchange id is the support reference the client quotes: it finds the logged row
        refused = refusal(decision, self.config.fallback_model, self.policy.gateway.throttle_retry_after_seconds,
                          stash["id"])
        if refused is not None:
            self._log(stash, refused.status, (None, 0))
            raise HTTPException(status_code=refused.status, detail=refused.message, headers=refused.headers)
        if decision.action == "fallback":
            data["model"] = self.config.fallback_model
        return data

    def _log(self, stash: dict, status: int, tokens: tuple[int | None, int | None]) -> None:
        client = Client(stash["ip"], stash["ua"])
        row = exchange_row(stash["id"], stash["started"], stash["who"], client, stash["facts"],
                           status, tokens, (time.perf_counter() - stash["t0"]) * 1000)
        try:
            self.journal.append(row)
        except JournalError as exc:
            log.error("%s (LiteLLM keeps serving: its own failure policy applies)", exc)

    @staticmethod
    def _stash(kwargs: dict) -> dict | None:
        params = kwargs.get("litellm_params") or {}
        for source in (params.get("metadata"), params.get("litellm_metadata"), kwargs.get("metadata")):
            if isinstance(source, dict) and isinstance(source.get(_STASH), dict):
                return source[_STASH]
        return None

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        stash = self._stash(kwargs)
        if stash is None:
            return
        body = response_obj.model_dump() if hasattr(response_obj, "model_dump") else response_obj
        self._log(stash, 200, usage(body))

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        stash = self._stash(kwargs)
        if stash is None:
            return
        error = kwargs.get("exception")
        self._log(stash, int(getattr(error, "status_code", 500) or 500), (None, None))


_guard: DistillguardGuard | None = None


def __getattr__(name: str) -> Any:
    """``guard``: one instance per process, made on first use (LiteLLM imports it by name)."""
    global _guard
    if name == "guard":
        if _guard is None:
            _guard = DistillguardGuard()
        return _guard
    raise AttributeError(name)
