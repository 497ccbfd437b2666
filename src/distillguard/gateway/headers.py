"""What the gateway reads from a client's headers and which headers cross it, each way.

aiohttp decodes header values as UTF-8 with ``surrogateescape``: a byte that is not UTF-8
arrives as a lone surrogate, which no JSON encoder and no ``str.encode()`` accepts. So every
header value the gateway logs goes through ``text`` (valid text kept, each invalid byte
written ``\\xNN``: readable, valid UTF-8, and still the bytes the client sent, which is the
evidence), and credentials go through ``bearer`` / ``api_key``, which take ASCII only (no
key we issue holds anything else) and answer None for anything else, so that the caller
answers 401.

The two allowlists say which headers cross the gateway. Anything not listed is dropped: a
client's cookies, its organisation and project at the provider, ``Forwarded`` and the like
never reach the upstream, and the upstream's cookies, organisation and server banner never
reach the client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiohttp.compression_utils import HAS_BROTLI, HAS_ZSTD

#: an id in a route's path (an account, a campaign, a control): anything but '/'. aiohttp's
#: default also refuses '{' and '}', which an account id may hold: such a request matched no
#: route at all and got aiohttp's plain-text 404
ROUTE_ID = "[^/]+"
#: the route that answers every path no other route takes, with an OpenAI-shaped 404; '[\\s\\S]'
#: because '.' stops at a newline, which a decoded path may hold
ANY_PATH = "/{tail:[\\s\\S]*}"

#: request headers passed upstream: what the four APIs need to parse and version a request
#: (the upstream credential is set by the gateway, never taken from the client)
UPSTREAM_REQUEST: tuple[str, ...] = ("Content-Type", "Accept", "OpenAI-Beta", "anthropic-version",
                                     "anthropic-beta", "Idempotency-Key")

#: response headers passed back to the client, by exact (lower-case) name
DOWNSTREAM_RESPONSE: frozenset[str] = frozenset({
    "content-type", "cache-control", "retry-after", "retry-after-ms", "x-should-retry", "x-request-id",
    "request-id", "openai-processing-ms", "openai-version"})
#: ... and by prefix: the rate-limit headers of OpenAI and Anthropic
DOWNSTREAM_PREFIXES: tuple[str, ...] = ("x-ratelimit-", "anthropic-ratelimit-")
#: the content codings the gateway's client decodes (and so offers upstream in Accept-Encoding):
#: an answer in one of them reaches the client decoded, without Content-Encoding; one in any
#: other coding (which the upstream was not offered) is passed on as it came, labelled
DECODED: frozenset[str] = frozenset({"identity", "gzip", "deflate"} | ({"br"} if HAS_BROTLI else set())
                                    | ({"zstd"} if HAS_ZSTD else set()))


def text(value: str | None) -> str | None:
    """A header value as loggable text: valid UTF-8 kept as it is, each byte that is not
    written as ``\\xNN`` (so distinct raw bytes stay distinct as evidence)."""
    if value is None or value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header; None when there is none or it is
    not printable ASCII. Shared by the proxied routes and the admin API."""
    auth = headers.get("Authorization")
    if not auth or auth[:7].lower() != "bearer ":
        return None
    token = auth[7:].strip()
    return token if token and token.isascii() and token.isprintable() else None


def api_key(headers: Mapping[str, str]) -> str | None:
    """A client's API key: the bearer token (OpenAI SDKs) or ``x-api-key`` (Anthropic's)."""
    token = bearer(headers)
    if token is not None:
        return token
    key = headers.get("x-api-key")
    if not key:
        return None
    key = key.strip()
    return key if key and key.isascii() and key.isprintable() else None


def undecodable(headers: Mapping[str, str], names: Iterable[str] = ("Authorization", "x-api-key")) -> bool:
    """Whether one of the credential headers holds something ``bearer``/``api_key`` refuse to
    read as a key (bytes that are not ASCII): worth one log line, as no client sends them."""
    return any(not (headers.get(n) or "").isascii() for n in names)


def upstream_request(headers: Mapping[str, str]) -> dict[str, str]:
    """The client's headers the upstream sees (UPSTREAM_REQUEST), values that are not ASCII
    dropped (HTTP allows none in these)."""
    out = {}
    for name in UPSTREAM_REQUEST:
        value = headers.get(name)
        if value is not None and value.isascii():
            out[name] = value
    return out


#: what downstream_response does with a header, by its name as the upstream spelled it: pass it,
#: drop it, or look at its value (Content-Encoding); an upstream sends the same dozen names with
#: every answer, so each is judged once (up to _NAMES_KEPT names, then per answer)
_PASS, _DROP, _CODING = 0, 1, 2
_DOWNSTREAM_NAMES: dict[str, int] = {}
_NAMES_KEPT = 1024


def _downstream_kind(name: str) -> int:
    low = name.lower()
    if low == "content-encoding":
        return _CODING
    return _PASS if low in DOWNSTREAM_RESPONSE or low.startswith(DOWNSTREAM_PREFIXES) else _DROP


def downstream_response(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The upstream's headers the client sees (DOWNSTREAM_RESPONSE and DOWNSTREAM_PREFIXES;
    Content-Encoding only where the answer was not decoded, see DECODED)."""
    out = {}
    for name, value in headers:
        kind = _DOWNSTREAM_NAMES.get(name)
        if kind is None:
            kind = _downstream_kind(name)
            if len(_DOWNSTREAM_NAMES) < _NAMES_KEPT:
                _DOWNSTREAM_NAMES[name] = kind
        if kind == _PASS or (kind == _CODING and value.lower() not in DECODED):
            out[name] = value
    return out
