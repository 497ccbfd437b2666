"""Property-based: the inputs nobody vets before the gateway reads them.

Header bytes from any client (sent on raw sockets, so that no client library cleans them
first), the admin API's bodies, and the policy file an operator edits. Whatever arrives: the
gateway never answers 500 and never logs a traceback; the policy loader raises a UserError that
names the file, or returns a policy, and nothing else.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import urllib.parse

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from distillguard.errors import UserError
from distillguard.detect.policy import Policy, load_policy
from tests.gateway.inputs import write_scan
from tests.gateway.procs import start_gateway

pytestmark = pytest.mark.slow  # many generated inputs against a gateway process
EXAMPLES = int(os.environ.get("DG_HYPOTHESIS_EXAMPLES", "60"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
ADMIN_TOKEN = "properties-admin-token-0123456789abcdef"
ALICE = "sk-properties-alice-0123456789abcdef"
CAROL = "sk-properties-carol-0123456789abcdef"  # blocked by the scan
UPSTREAM_CHUNK_DELAY_MS = 0


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, upstream):
    tmp = tmp_path_factory.mktemp("untrusted")
    write_scan(tmp / "scan", [("carol", "block", "campaign-1")])
    gw = start_gateway(tmp, upstream, keys=[{"api_key": ALICE, "account_id": "alice"},
                                                 {"api_key": CAROL, "account_id": "carol"}],
                       verdicts=str(tmp / "scan"), admin_token=ADMIN_TOKEN)
    yield gw
    gw.stop()


def _new_log(gateway, seen: int) -> str:
    return gateway.log()[seen:]


def _openai_error(status: int, body: bytes) -> None:
    parsed = json.loads(body)
    assert isinstance(parsed, dict) and isinstance(parsed.get("error"), dict), (status, body[:300])
    assert isinstance(parsed["error"].get("message"), str) and "type" in parsed["error"], (status, body[:300])


# --- header bytes -----------------------------------------------------------------------------

#: any byte an HTTP parser lets through in a header value: printable ASCII, tab, and every byte
#: from 0x80 (obs-text: what a non-UTF-8 value is made of)
PASSED_BYTES = bytes([0x09, *range(0x20, 0x7f), *range(0x80, 0x100)])
header_bytes = st.lists(st.sampled_from(PASSED_BYTES), max_size=120).map(bytes)
#: ... and the ones it refuses (control characters and DEL), each value holding at least one
CONTROL_BYTES = bytes([c for c in range(0x20) if c not in (0x09, 0x0a, 0x0d)] + [0x7f])
malformed_bytes = st.tuples(header_bytes, st.sampled_from(CONTROL_BYTES).map(lambda c: bytes([c])),
                            header_bytes).map(b"".join)


def raw_request(port: int, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, bytes, bytes]:
    """One HTTP/1.1 request written byte for byte; (status, headers block, body) of the answer."""
    head = [b"POST " + path.encode() + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close",
            b"Content-Type: application/json", b"Content-Length: " + str(len(body)).encode()]
    head += [name + b": " + value for name, value in headers]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    status_line, _, rest = received.partition(b"\r\n")
    block, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), block, payload


CHAT = json.dumps({"model": "m-large", "messages": [{"role": "user", "content": "hello there"}]}).encode()
CHAT_STREAM = json.dumps({"model": "m-large", "messages": [{"role": "user", "content": "hello there"}],
                          "stream": True, "stream_options": {"include_usage": True}}).encode()


def _send_header(gateway, name: bytes, value: bytes, key: str | None, body: bytes) -> tuple[int, bytes, bytes]:
    headers = [(name, value)]
    if key is not None:
        headers.append((b"Authorization", b"Bearer " + key.encode()))
    return raw_request(gateway.port, "/v1/chat/completions", headers, body)


@SETTINGS
@given(value=header_bytes, blocked=st.booleans(), stream=st.booleans())
@example(value=b"curl/8 \xff\xfe", blocked=True, stream=False)
def test_any_user_agent_bytes_are_served_or_refused_as_the_account_is_never_a_500(gateway, value, blocked, stream):
    seen = len(gateway.log())
    status, _, payload = _send_header(gateway, b"User-Agent", value, CAROL if blocked else ALICE,
                                      CHAT_STREAM if stream else CHAT)
    assert status == (403 if blocked else 200), (status, payload[:300])
    if status == 403:
        _openai_error(status, payload)
    assert "Traceback" not in _new_log(gateway, seen)


@SETTINGS
@given(value=header_bytes, header=st.sampled_from([b"Authorization", b"x-api-key"]),
       bearer=st.booleans())
@example(value=b"sk-\xff\xfe", header=b"Authorization", bearer=True)
@example(value=b"\xc3\x28", header=b"x-api-key", bearer=False)
def test_any_credential_bytes_get_a_401_never_a_500(gateway, value, header, bearer):
    seen = len(gateway.log())
    sent = (b"Bearer " + value) if bearer and header == b"Authorization" else value
    status, _, payload = raw_request(gateway.port, "/v1/chat/completions", [(header, sent)], CHAT)
    assert status == 401, (status, payload[:300])
    _openai_error(status, payload)
    assert "Traceback" not in _new_log(gateway, seen)


@SETTINGS
@given(value=header_bytes)
@example(value=b"Bearer \xff\xfe")
def test_any_admin_token_bytes_get_a_401_never_a_500(gateway, value):
    seen = len(gateway.log())
    status, _, payload = raw_request(gateway.port, "/admin/accounts/alice/action", [(b"Authorization", value)],
                                     b'{"action": "monitor", "reason": "property test"}')
    assert status == 401, (status, payload[:300])
    _openai_error(status, payload)
    assert "Traceback" not in _new_log(gateway, seen)


@SETTINGS
@given(value=malformed_bytes, header=st.sampled_from([b"User-Agent", b"Authorization", b"x-api-key"]))
def test_a_header_with_a_control_character_gets_a_400_and_no_traceback_in_the_log(gateway, value, header):
    seen = len(gateway.log())
    key = [] if header == b"Authorization" else [(b"Authorization", b"Bearer " + ALICE.encode())]
    status, _, payload = raw_request(gateway.port, "/v1/chat/completions", [(header, value), *key], CHAT)
    assert status == 400, (status, payload[:300])
    assert "Traceback" not in _new_log(gateway, seen)


# --- the admin API's bodies ---------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10)
#: bodies that look like an action often enough to reach past the first check
action_like = st.fixed_dictionaries({}, optional={
    "action": st.sampled_from(["allow", "monitor", "throttle", "fallback", "block", "lift", ""]) | json_values,
    "reason": st.text(max_size=30) | json_values, "actor": st.text(max_size=30) | json_values,
    "expires_at": st.sampled_from(["2099-01-01T00:00:00Z", "2000-01-01T00:00:00Z", "2099-01-01", "soon"])
    | json_values}).flatmap(lambda base: st.dictionaries(st.text(max_size=10), json_values, max_size=2)
                            .map(lambda extra: extra | base))
admin_bodies = (action_like.map(lambda b: json.dumps(b).encode())
                | json_values.map(lambda b: json.dumps(b).encode())
                | st.binary(max_size=60))
account_ids = st.text(min_size=1, max_size=30).filter(lambda a: a not in (".", ".."))


def _admin(port: int, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                                                   "Content-Type": "application/json"})
    reply = conn.getresponse()
    payload = reply.read()
    conn.close()
    return reply.status, payload


@SETTINGS
@given(account=account_ids, body=admin_bodies, lift=st.booleans())
@example(account="acct-1", body=b'{"action": {}, "reason": "x"}', lift=False)
@example(account="acct-1", body=b'{"action": "block", "reason": "property test"}', lift=False)
@example(account="{\n", body=b'{"action": "block", "reason": "property test"}', lift=False)
@example(account="}\n", body=b"", lift=True)
def test_any_admin_body_gets_200_or_an_openai_shaped_400_never_a_500(gateway, account, body, lift):
    seen = len(gateway.log())
    quoted = urllib.parse.quote(account, safe="")
    path = f"/admin/overrides/{quoted}" if lift else f"/admin/accounts/{quoted}/action"
    status, payload = _admin(gateway.port, "DELETE" if lift else "POST", path, body)
    assert status in (200, 400, 404), (status, payload[:300])
    if status == 200:
        standing = json.loads(payload)
        assert standing["account_id"] == account
    else:
        _openai_error(status, payload)
    assert "Traceback" not in _new_log(gateway, seen)


# --- the policy file ------------------------------------------------------------------------------

POLICY_KEYS = sorted(Policy.model_fields) + ["campaign", "monitor", "throttle", "block", "limits", "scope",
                                            "max_requests", "action", "enabled"]
yaml_scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
                | st.sampled_from(["2026-13-45", "2026-02-30 10:00", "1e400", ".nan", "-.inf", "0x1F", "~"]))
yaml_values = st.recursive(yaml_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.sampled_from(POLICY_KEYS) | st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
#: text a YAML parser gets: a dump of a structure keyed like a policy, raw text with YAML's own
#: syntax sprinkled in, or bytes that need not even be UTF-8
policy_files = (yaml_values.map(lambda v: yaml.safe_dump(v, allow_unicode=True).encode())
                | st.text(alphabet=st.characters() | st.sampled_from(list("{}[]:-&*!|>'\"%@`#,?\n\t ")),
                          max_size=80).map(lambda t: t.encode("utf-8", "surrogatepass"))
                | st.binary(max_size=80))


@SETTINGS
@given(content=policy_files)
@example(content=b"\xff\xfe lookback_days: 3")
@example(content=b"lookback_days: 2026-13-45\n")
@example(content=b"[" * 3000)
@example(content=b"campaign: {monitor: 0.9, block: 0.1}\n")
@example(content=b'"": 1\n"a\\nb": 2\n')
def test_any_policy_file_loads_or_raises_a_user_error_naming_the_file(tmp_path, content):
    path = tmp_path / "policy.yaml"
    path.write_bytes(content)
    try:
        policy = load_policy(path)
    except UserError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: "), message
        assert "\n" not in message, message  # one line for the CLI
        if "policy field" in message:  # a validation error names the field
            assert message.split("policy field ", 1)[1].split(":", 1)[0].strip(), message
        return
    assert isinstance(policy, Policy)
