"""distillguard inside a LiteLLM proxy: a guardrail that applies the same verdicts, operators'
overrides, inheritance and limits as ``distillguard serve`` before each call, and a logging
callback that writes every exchange in the canonical schema into the same kind of durable log
and store.

For providers already running the LiteLLM proxy, so that they need not put a second proxy in
front of it. In the proxy's config.yaml::

    guardrails:
      - guardrail_name: distillguard
        litellm_params:
          guardrail: distillguard.gateway.litellm.DistillguardGuardrail  # module.Class
          mode: pre_call
          default_on: true
          distillguard_config: /etc/distillguard/litellm.yaml
    litellm_settings:
      callbacks: distillguard.gateway.litellm.guard

``distillguard_config`` names the distillguard side (the gateway's settings, docs/gateway.md,
without ``upstream``: LiteLLM is the proxy); without it, the file named by
``DISTILLGUARD_LITELLM_CONFIG``::

    db: distillguard.duckdb
    verdicts: scan-out/
    policy: policy.yaml
    state_dir: dg-state/            # operators' overrides (overrides.jsonl), re-read when it changes
    fallback_model: safe-small      # a model_name of LiteLLM's model_list

The guardrail decides; the callback (``guard``) logs. Both may be configured: an exchange is
logged once. The callback alone logs without enforcing (monitor only).

Identity comes from LiteLLM's ``UserAPIKeyAuth``: the account is the key's user (``user_id``),
else the request's end user, else the key's alias, else its hash; the organisation is the key's
organisation, else its team; the key id is derived from the key's hash as the gateway's is.
The client IP and user agent are the ones LiteLLM records in the request's metadata (with
``use_x_forwarded_for``, the first X-Forwarded-For address). Refusals are errors with the
gateway's statuses and generic messages (reasons stay in the log): 403 for block, 429 with
Retry-After for throttle.

A key that the scan of the enforced verdicts recognised as a reseller's (the gateway's
``Resellers``, read from the store ``db``) is decided per end user, as the gateway decides it:
its account is the key's own, never the end user, and a request naming an end user is decided
as the entity ``<account>::<end user>`` (its override, else the account's; its verdict, else the
account's); with the policy's ``resellers.require_end_user``, one naming none is refused (400).

Fallback swaps the request's model for ``fallback_model``, and the answer still names the model
asked for: LiteLLM itself (1.81.7 on) answers with the model the client asked for in the body
and in every stream chunk (tests/gateway/test_litellm_plugin.py holds it to that), and the guardrail's response-headers hook gives LiteLLM's
``x-litellm-model-*`` headers (model group, name, id, api base) the values of a deployment of
that model. The upstream's own headers, which LiteLLM passes on as ``llm_provider-*``, and the
cost headers are those of the deployment that answered.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import logging
import os
import time
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from distillguard.detect.policy import load_policy
from distillguard.gateway import overrides as overrides_mod
from distillguard.gateway import resellers as resellers_mod
from distillguard.gateway.config import GatewayConfig
from distillguard.gateway.enforce import Enforcer, Request, ScanOutputs, refusal
from distillguard.gateway.journal import Journal, JournalError, Loader
from distillguard.gateway.keys import KeyRecord
from distillguard.gateway.limits import MemoryCounters, RedisCounters
from distillguard.gateway.protocol import Client, exchange_row, new_exchange_id, request_facts, usage
from distillguard.gateway.protocol import end_user as end_user_of
from distillguard.store import Store

try:  # LiteLLM is an optional extra: distillguard[litellm]
    from fastapi import HTTPException
    from litellm.integrations.custom_guardrail import CustomGuardrail
    from litellm.integrations.custom_logger import CustomLogger
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError("distillguard.gateway.litellm needs LiteLLM: pip install 'distillguard[litellm]'") from exc

log = logging.getLogger("distillguard.litellm")

#: LiteLLM call types -> the API family whose request shape they carry (protocol.ROUTES)
_API = {"completion": "chat", "acompletion": "chat", "text_completion": "completions",
        "atext_completion": "completions", "responses": "responses", "aresponses": "responses",
        "anthropic_messages": "messages"}
_STASH = "distillguard"
#: how many exchange ids are remembered so that the guardrail and the callback log each once
_LOGGED_MEMORY = 50_000


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


def identity(key: Any, data: dict, api: str = "chat",
             resellers: resellers_mod.Resellers | None = None) -> tuple[KeyRecord, resellers_mod.Relay | None]:
    """The account, key and organisation of a request, from LiteLLM's ``UserAPIKeyAuth`` (and
    the request's ``user`` field, LiteLLM's end user, when the key has no user), and the relayed
    request it is when ``resellers`` recognise its key (None otherwise).

    A recognised reseller key's account is the key's own (its user, alias or hash), never the
    end user: the end user is decided beneath it as ``<account>::<end user>``, as the gateway
    decides it (gateway/resellers.py)."""
    token = getattr(key, "token", None) or getattr(key, "api_key", None) or "anonymous"
    named = getattr(key, "end_user_id", None)
    # the same printable-id rule as the gateway's: an end user becomes part of an entity id
    end_user = (end_user_of("chat", {"user": named}) if named else None) or end_user_of(api, data)
    own = getattr(key, "user_id", None) or getattr(key, "key_alias", None) or f"litellm-key-{str(token)[:16]}"
    org = getattr(key, "org_id", None) or getattr(key, "team_id", None)
    # LiteLLM keeps a key as its SHA-256 (``token``); a raw key is hashed as the gateway hashes it
    digest = str(token) if len(str(token)) == 64 else hashlib.sha256(str(token).encode()).hexdigest()
    record = KeyRecord(digest, str(own), organization_id=org)
    relay = resellers.relay(record.key_id, record.account_id, end_user) if resellers is not None else None
    if relay is None and end_user and not getattr(key, "user_id", None):
        record = KeyRecord(digest, end_user, organization_id=org)
    return record, relay


class _Runtime:
    """One per process, shared by the guardrail and the callback: settings, enforcer, log."""

    def __init__(self, config_path: str | None) -> None:
        self.config = _settings(config_path or os.environ.get("DISTILLGUARD_LITELLM_CONFIG"))
        self.policy = load_policy(self.config.policy)
        counters = MemoryCounters()
        if self.config.state:
            import redis.asyncio as redis_asyncio

            counters = RedisCounters(redis_asyncio.from_url(self.config.state))
        self.scan = ScanOutputs(self.config.verdicts)
        self.enforcer = Enforcer(self.policy, self.scan, counters)
        # the reseller keys of the scan whose verdicts are enforced, read as the gateway reads them
        self.resellers = resellers_mod.Resellers()
        self.resellers.refresh(self.config.db, self.scan.as_of, time.monotonic())
        self.override_file = overrides_mod.OverrideFile(self.config.overrides_dir)
        self.book = overrides_mod.Book()
        self.enforcer.overrides = self.book.active
        self._overrides_stamp: tuple[int, int] | None = None
        self._load_overrides(from_store=True)
        self.journal = Journal(self.config.journal_dir, self.config.fsync_seconds)
        self.loader = Loader(self.journal, self.config.db, self.config.load_every_seconds,
                             self.config.segment_seconds, sync=overrides_mod.CopyToStore(self.config.overrides_dir))
        self.loader.start()
        atexit.register(self._drain)
        self._checked = 0.0
        self._logged: OrderedDict[str, None] = OrderedDict()

    def _drain(self) -> None:
        """At exit: the open segment into the store (kept on disk if the store is busy)."""
        self.loader.stop(drain=True)
        self.journal.close()

    def _load_overrides(self, from_store: bool = False) -> None:
        """The operators' overrides: the store's at start, then the override file whenever it changes."""
        events = []
        if from_store and Path(self.config.db).exists():
            try:
                with Store(self.config.db, read_only=True) as store:
                    events = overrides_mod.from_store(store.con)
            except Exception as exc:  # noqa: BLE001 - the override file has this deployment's own
                log.warning("start-up: cannot read overrides from the store (%s)", exc)
        self._overrides_stamp = self.override_file.stamp()
        self.book.replay(events + self.override_file.events())

    async def refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.config.reload_every_seconds:
            return
        self._checked = now
        await asyncio.to_thread(self.enforcer.refresh)
        await asyncio.to_thread(self.resellers.refresh, self.config.db, self.scan.as_of, now)
        if self.override_file.stamp() != self._overrides_stamp:
            await asyncio.to_thread(self._load_overrides)

    def stash(self, key: Any, data: dict, call_type: str) -> dict:
        """What the log needs of a request, kept in its metadata (made once per request)."""
        meta = _metadata(data)
        if isinstance(meta.get(_STASH), dict):
            return meta[_STASH]
        api = _API.get(str(call_type), "chat")
        who, relay = identity(key, data, api, self.resellers)
        ip = meta.get("requester_ip_address") or None
        if ip and "," in ip:
            ip = ip.split(",")[0].strip()
        started = datetime.now(UTC)
        meta[_STASH] = {"id": new_exchange_id("litellm-", started), "started": started, "who": who, "ip": ip,
                        "relay": relay, "ua": meta.get("user_agent") or None,
                        "facts": request_facts(api, data, who.account_id), "t0": time.perf_counter()}
        return meta[_STASH]

    def log_once(self, stash: dict, status: int, tokens: tuple[int | None, int | None]) -> None:
        if stash["id"] in self._logged:
            return
        self._logged[stash["id"]] = None
        if len(self._logged) > _LOGGED_MEMORY:
            self._logged.popitem(last=False)
        client = Client(stash["ip"], stash["ua"])
        row = exchange_row(stash["id"], stash["started"], stash["who"], client, stash["facts"],
                           status, tokens, (time.perf_counter() - stash["t0"]) * 1000)
        try:
            self.journal.append(row)
        except JournalError as exc:
            log.error("%s (LiteLLM keeps serving: its own failure policy applies)", exc)


_runtime: _Runtime | None = None


def _shared_runtime(config_path: str | None = None) -> _Runtime:
    global _runtime
    if _runtime is None:
        _runtime = _Runtime(config_path)
    return _runtime


class _Logs:
    """The success and failure hooks: each exchange stashed at pre-call is logged once."""

    runtime: _Runtime

    @staticmethod
    def _stash(kwargs: dict) -> dict | None:
        params = kwargs.get("litellm_params") or {}
        for source in (params.get("metadata"), params.get("litellm_metadata"), kwargs.get("metadata")):
            if isinstance(source, dict) and isinstance(source.get(_STASH), dict):
                return source[_STASH]
        return None

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):
        stash = self._stash(kwargs)
        if stash is not None:
            body = response_obj.model_dump() if hasattr(response_obj, "model_dump") else response_obj
            self.runtime.log_once(stash, 200, usage(body))

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):
        stash = self._stash(kwargs)
        if stash is not None:
            error = kwargs.get("exception")
            self.runtime.log_once(stash, int(getattr(error, "status_code", 500) or 500), (None, None))


class DistillguardGuardrail(_Logs, CustomGuardrail):
    """The pre-call guardrail: refuses or reroutes a request as the gateway would, and logs it.

    LiteLLM makes it from the ``guardrails:`` section, passing ``guardrail_name``, ``event_hook``
    (the mode), ``default_on`` and the section's other ``litellm_params`` (``distillguard_config``)."""

    def __init__(self, distillguard_config: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runtime = _shared_runtime(distillguard_config)

    async def async_pre_call_hook(self, user_api_key_dict, cache, data: dict, call_type: str):
        runtime = self.runtime
        await runtime.refresh()
        stash = runtime.stash(user_api_key_dict, data, call_type)
        who, facts, relay = stash["who"], stash["facts"], stash["relay"]
        if relay is not None and relay.end_user is None and runtime.policy.resellers.require_end_user:
            runtime.log_once(stash, 400, (None, 0))
            raise HTTPException(status_code=400, detail=resellers_mod.END_USER_REQUIRED[0])
        entity = relay.entity if relay is not None and relay.end_user else None
        decision = await runtime.enforcer.decide(Request(who.account_id, who.organization_id, None, None, None,
                                                         stash["ip"], facts.system_prompt, facts.prompt,
                                                         stash["started"], entity=entity))
        stash["action"] = decision.action
        # the exchange id is the support reference the client quotes: it finds the logged row
        refused = refusal(decision, runtime.config.fallback_model,
                          runtime.policy.gateway.throttle_retry_after_seconds, stash["id"])
        if refused is not None:
            runtime.log_once(stash, refused.status, (None, 0))
            raise HTTPException(status_code=refused.status, detail=refused.message, headers=refused.headers)
        if decision.action == "fallback":
            stash["asked"] = data.get("model")
            data["model"] = runtime.config.fallback_model
        return data

    async def async_post_call_response_headers_hook(self, data: dict, user_api_key_dict: Any, response: Any,
                                                    request_headers: dict[str, str] | None = None,
                                                    litellm_call_info: dict | None = None) -> dict[str, str] | None:
        """For an answer of the fallback model, LiteLLM's headers that name the deployment that
        answered (model group, model name, model id, api base) name a deployment of the model
        asked for instead, so that the answer looks like any other of that model. LiteLLM runs
        this hook for every callback, whatever the guardrail's mode, streamed or not; its
        headers replace LiteLLM's own."""
        stash = _stash_of(data)
        asked = stash.get("asked") if stash is not None else None
        if not isinstance(asked, str):
            return None
        return _deployment_headers(asked)


def _stash_of(data: dict) -> dict | None:
    for name in ("metadata", "litellm_metadata"):
        meta = data.get(name)
        if isinstance(meta, dict) and isinstance(meta.get(_STASH), dict):
            return meta[_STASH]
    return None


def _deployment_headers(model_group: str) -> dict[str, str]:
    """LiteLLM's ``x-litellm-model-*`` headers as an answer of ``model_group``'s first deployment
    carries them (only the group when the router holds no deployment of that name)."""
    headers = {"x-litellm-model-group": model_group}
    try:
        from litellm.proxy.proxy_server import llm_router
    except ImportError:  # pragma: no cover - the hook runs inside the proxy
        return headers
    deployments = llm_router.get_model_list(model_name=model_group) if llm_router is not None else None
    if not deployments:
        return headers
    params, info = deployments[0].get("litellm_params") or {}, deployments[0].get("model_info") or {}
    for name, value in (("x-litellm-model-name", params.get("model")), ("x-litellm-model-id", info.get("id")),
                        ("x-litellm-model-api-base", str(params.get("api_base") or "").split("?")[0])):
        if value:
            headers[name] = str(value)
    return headers


class DistillguardLogger(_Logs, CustomLogger):
    """The logging callback: records each request's identity at pre-call and logs the exchange
    when it ends; it never refuses (that is the guardrail's part)."""

    @property
    def runtime(self) -> _Runtime:
        # resolved at the first request: by then a configured guardrail has made the runtime
        # from its own ``distillguard_config``
        return _shared_runtime()

    async def async_pre_call_hook(self, user_api_key_dict, cache, data: dict, call_type: str):
        self.runtime.stash(user_api_key_dict, data, call_type)
        return data


_guard: DistillguardLogger | None = None


def __getattr__(name: str) -> Any:
    """``guard``: the logging callback, one per process, made on first use (LiteLLM imports it by name)."""
    global _guard
    if name == "guard":
        if _guard is None:
            _guard = DistillguardLogger()
        return _guard
    raise AttributeError(name)
