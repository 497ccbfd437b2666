"""The gateway against its own OpenAPI description: schemathesis generates requests for every
route the description names (src/distillguard/gateway/openapi.yaml, served at /openapi.json)
and sends them to a real ``distillguard serve`` in front of the mock upstream.

What must hold for every request, valid or not: no 5xx of the gateway's own (an upstream's 5xx
passed back is the upstream's), and every error the gateway answers is in the OpenAI error
shape, so that every OpenAI SDK raises it as an APIError with its message. The default run is
bounded for CI; the ``slow`` one tries many more examples per route.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

import distillguard.gateway
from tests.gateway.procs import call, start_gateway

pytestmark = pytest.mark.slow  # generated requests to every route of a gateway process
ADMIN_TOKEN = "openapi-admin-token-0123456789abcdef"
KEYS = [{"api_key": "sk-openapi-alice-0123456789abcdef", "account_id": "alice"}]
FAST_EXAMPLES = int(os.environ.get("DG_OPENAPI_EXAMPLES", "12"))
SLOW_EXAMPLES = 300
#: answers that are not errors of the gateway's: /ready's 503 is its report for an orchestrator
#: (Readiness in the description), not a failed request
NOT_ERRORS = {("/ready", 503)}
UPSTREAM_CHUNK_DELAY_MS = 0


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, upstream):
    gw = start_gateway(tmp_path_factory.mktemp("openapi"), upstream, keys=KEYS, admin_token=ADMIN_TOKEN,
                       upstream_timeout_seconds=5.0)
    yield gw
    gw.stop()


#: the description as the package ships it; test_the_gateway_serves_its_openapi_description checks
#: that the gateway serves the same (schemathesis's lazy loading from a fixture breaks on pytest 9)
DESCRIPTION = Path(distillguard.gateway.__file__).with_name("openapi.yaml")
schema = schemathesis.openapi.from_path(DESCRIPTION)


def error_is_openai_shaped(ctx, response, case) -> bool | None:
    """A 4xx or 5xx body is {"error": {"message": str, "type": str, "code": str|null, ...}}."""
    if response.status_code < 400 or (case.path, response.status_code) in NOT_ERRORS:
        return None
    content_type = response.headers.get("content-type", [""])
    content_type = content_type[0] if isinstance(content_type, list) else content_type
    assert content_type.startswith("application/json"), (
        f"{response.status_code} answered as {content_type!r}, not JSON: {response.content[:200]!r}")
    body = response.json()
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict), f"{response.status_code} body is not OpenAI-shaped: {body!r}"[:500]
    assert isinstance(error.get("message"), str) and error["message"], f"no message: {body!r}"[:500]
    assert isinstance(error.get("type"), str) and error["type"], f"no type: {body!r}"[:500]
    assert "code" in error and (error["code"] is None or isinstance(error["code"], str)), f"bad code: {body!r}"[:500]
    return True


def _credentials(case) -> dict[str, str]:
    """The admin token for the admin routes and /metrics, a client's key for the rest."""
    admin = case.path.startswith("/admin") or case.path == "/metrics"
    return {"Authorization": f"Bearer {ADMIN_TOKEN if admin else KEYS[0]['api_key']}"}


def _check(case, gateway) -> None:
    seen = len(gateway.log())
    case.call_and_validate(base_url=f"http://127.0.0.1:{gateway.port}", headers=_credentials(case), timeout=30,
                           checks=[not_a_server_error, error_is_openai_shaped])
    assert gateway.proc.poll() is None, "the gateway exited"
    written = gateway.log()[seen:]
    assert "Traceback" not in written, written[-3000:]


def test_the_gateway_serves_its_openapi_description(gateway):
    reply = call(gateway.port, "/openapi.json", method="GET", key=None)
    assert reply.status == 200 and reply.headers["content-type"].startswith("application/json")
    described = reply.json()
    assert described == yaml.safe_load(DESCRIPTION.read_text())
    assert described["openapi"].startswith("3.")
    from distillguard.gateway.protocol import ROUTES

    # every route the gateway registers (server.py and controls.py), so that schemathesis reaches each
    for path, methods in [*((route, {"post"}) for route in ROUTES), ("/v1/models", {"get"}), ("/health", {"get"}),
                          ("/ready", {"get"}), ("/openapi.json", {"get"}), ("/metrics", {"get"}),
                          ("/admin/verdicts", {"get"}), ("/admin/verdicts/{account_id}", {"get"}),
                          ("/admin/accounts/{account_id}/action", {"post"}), ("/admin/overrides", {"get"}),
                          ("/admin/overrides/audit", {"get"}), ("/admin/overrides/{account_id}", {"delete"}),
                          ("/admin/campaigns/{campaign_id}/action", {"post"}),
                          ("/admin/campaigns/{campaign_id}/override", {"delete"}), ("/admin/policy/reload", {"post"}),
                          ("/admin/controls", {"get", "post"}), ("/admin/controls/audit", {"get"}),
                          ("/admin/controls/{control_id}", {"delete"})]:
        assert path in described["paths"], path
        assert methods <= set(described["paths"][path]), (path, methods)


@schema.parametrize()
@settings(max_examples=FAST_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_request_gets_a_500_and_every_error_is_openai_shaped(case, gateway):
    _check(case, gateway)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=SLOW_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_many_generated_requests_get_no_500_and_only_openai_shaped_errors(case, gateway):
    _check(case, gateway)
