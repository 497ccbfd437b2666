"""The canonical exchange schema: one row = one request/response.

Every stage after ingest reads only these columns, and outside scripts depend on their
names, so this module is the single place that declares them: their Arrow type, whether
they are required, what they mean, and which input names (aliases) map onto them.
docs/schema.md is generated from this table (``python -m distillguard.schema``) and a test
checks that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa

Kind = Literal["string", "timestamp", "integer", "number", "ip"]

_ARROW_TYPES: dict[Kind, pa.DataType] = {
    "string": pa.string(),
    "ip": pa.string(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "integer": pa.int64(),
    "number": pa.float64(),
}

_DUCKDB_TYPES: dict[Kind, str] = {
    "string": "VARCHAR",
    "ip": "VARCHAR",
    "timestamp": "TIMESTAMPTZ",
    "integer": "BIGINT",
    "number": "DOUBLE",
}


@dataclass(frozen=True)
class Column:
    """One canonical column: its name is the interface, ``kind`` decides validation."""

    name: str
    kind: Kind
    meaning: str
    required: bool = False
    aliases: tuple[str, ...] = field(default=())
    non_negative: bool = False
    #: the only values a string column may hold (empty: any)
    values: tuple[str, ...] = field(default=())

    @property
    def arrow_type(self) -> pa.DataType:
        return _ARROW_TYPES[self.kind]

    @property
    def duckdb_type(self) -> str:
        return _DUCKDB_TYPES[self.kind]


COLUMNS: tuple[Column, ...] = (
    Column("exchange_id", "string", "Unique id of the request/response exchange.", required=True,
           aliases=("id", "request_id", "gen_ai.response.id")),
    Column("timestamp", "timestamp",
           "UTC time of the request. Input may be ISO-8601 (with or without offset; no offset "
           "means UTC) or epoch seconds, milliseconds, microseconds or nanoseconds.",
           required=True, aliases=("time", "ts", "request_time", "created_at")),
    Column("account_id", "string", "The customer account that sent the request.", required=True,
           aliases=("account", "user_id", "enduser.id", "user.id")),
    Column("api_key_id", "string", "Id (never the secret) of the API key used.",
           aliases=("key_id", "api_key")),
    Column("organization_id", "string", "Organization the account belongs to.",
           aliases=("org_id", "organization")),
    Column("end_user", "string",
           "The end user the caller named for this request (OpenAI's request field `user`, LiteLLM's "
           "`end_user`), when the account relays other people's requests: a reseller's end users are "
           "judged as entities of their own (docs/detection.md, Resellers).",
           aliases=("user", "end_user_id", "userId", "endUser")),
    Column("client_ip", "ip", "Client IP address, IPv4 or IPv6 text (stored in canonical form).",
           aliases=("client.address", "ip", "source_ip", "remote_addr")),
    Column("client_asn", "integer",
           "Autonomous system number of the client address, where the logging layer knows it "
           "(a CDN's or load balancer's ASN header); reports label it from the public hosting-ASN list.",
           aliases=("asn", "client.asn", "client_as_number", "source_asn"), non_negative=True),
    Column("user_agent", "string", "HTTP User-Agent of the client.",
           aliases=("user_agent.original", "ua")),
    Column("payment_fingerprint", "string", "Opaque hash of the payment method on file.",
           aliases=("payment_hash", "card_fingerprint")),
    Column("account_created_at", "timestamp", "When the account was created (UTC).",
           aliases=("account_created", "signup_time")),
    Column("email_domain", "string", "Domain of the account's e-mail address (from the address when the input "
           "gives an address and no domain).", aliases=("email.domain",)),
    Column("email_fingerprint", "string",
           "sha256 (hex) of the account's e-mail address, trimmed of white space and with A-Z lowered: the "
           "address itself is never stored. An address given in this column or under an input alias is hashed at ingest; a "
           "value of 64 hex digits is a fingerprint already and kept. intel export-hashed shares it keyed.",
           aliases=("email", "email_address", "user_email", "user.email")),
    Column("model", "string", "Model requested.", aliases=("gen_ai.request.model",)),
    Column("conversation_id", "string", "Conversation (thread) the exchange belongs to.",
           aliases=("gen_ai.conversation.id", "thread_id", "session_id")),
    Column("turn_index", "integer",
           "Position of the user message in its conversation, 0 for the first.",
           aliases=("turn",), non_negative=True),
    Column("system_prompt", "string", "System prompt of the request, if any.",
           aliases=("system",)),
    Column("prompt", "string", "The last user message of the request, as text.", required=True,
           aliases=("gen_ai.prompt", "input", "user_message")),
    Column("input_tokens", "integer", "Tokens in the request.",
           aliases=("gen_ai.usage.input_tokens", "prompt_tokens", "usage.prompt_tokens"),
           non_negative=True),
    Column("output_tokens", "integer", "Tokens in the response.",
           aliases=("gen_ai.usage.output_tokens", "completion_tokens", "usage.completion_tokens"),
           non_negative=True),
    Column("max_tokens", "integer", "max_tokens requested (null when not set).",
           aliases=("gen_ai.request.max_tokens", "max_completion_tokens", "max_output_tokens"),
           non_negative=True),
    Column("tool_count", "integer", "Number of tool/function definitions offered in the request.",
           aliases=("tools_count", "n_tools"), non_negative=True),
    Column("status_code", "integer", "HTTP status returned to the client.",
           aliases=("http.response.status_code", "status")),
    Column("latency_ms", "number", "Time from request to complete response, in milliseconds.",
           aliases=("duration_ms", "latency"), non_negative=True),
)

#: the kinds of account event, in the order an account usually goes through them
ACCOUNT_EVENT_KINDS: tuple[str, ...] = ("account_created", "card_added", "verification_passed",
                                        "verification_failed")

#: sign-up and payment events, one row each (``ingest --kind accounts``; table ``account_events``):
#: what the provider knows of an account before, and besides, its traffic
ACCOUNT_EVENT_COLUMNS: tuple[Column, ...] = (
    Column("event_id", "string",
           "Unique id of the event; when absent, the sha256 of the record's canonical fields, so that the "
           "same file ingested again stores nothing twice.", aliases=("id",)),
    Column("event", "string", "What happened to the account.", required=True,
           aliases=("event_type", "type", "action"), values=ACCOUNT_EVENT_KINDS),
    Column("timestamp", "timestamp", "UTC time of the event (ISO-8601 or epoch, as for exchanges).",
           required=True, aliases=("time", "ts", "created_at")),
    Column("account_id", "string", "The account the event concerns.", required=True,
           aliases=("account", "user_id")),
    Column("organization_id", "string", "Organization the account belongs to.",
           aliases=("org_id", "organization")),
    Column("client_ip", "ip", "Address the event came from (sign-up, card form), IPv4 or IPv6 text.",
           aliases=("ip", "source_ip", "remote_addr")),
    Column("client_asn", "integer", "Autonomous system number of that address, where known.",
           aliases=("asn", "client_as_number"), non_negative=True),
    Column("user_agent", "string", "HTTP User-Agent of the browser or client that sent the event.",
           aliases=("ua",)),
    Column("email_domain", "string", "Domain of the account's e-mail address (from the address when the input "
           "gives an address and no domain).", aliases=("email.domain",)),
    Column("email_fingerprint", "string",
           "sha256 (hex) of the account's e-mail address, hashed at ingest as the exchanges' email_fingerprint is: "
           "the address itself is never stored.", aliases=("email", "email_address", "user_email", "user.email")),
    Column("payment_fingerprint", "string", "Opaque hash of the payment method (card_added events).",
           aliases=("payment_hash", "card_fingerprint")),
    Column("country", "string", "Country of the sign-up or of the card, ISO 3166-1 alpha-2.",
           aliases=("country_code", "geo.country")),
)

COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
REQUIRED: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.required)
BY_NAME: dict[str, Column] = {c.name: c for c in COLUMNS}

#: input name -> canonical name, for canonical names and every alias
ALIASES: dict[str, str] = {c.name: c.name for c in COLUMNS}
for _c in COLUMNS:
    for _a in _c.aliases:
        ALIASES[_a] = _c.name

ARROW_SCHEMA: pa.Schema = pa.schema(
    [pa.field(c.name, c.arrow_type, nullable=not c.required) for c in COLUMNS]
)


def duckdb_columns_sql(columns: tuple[Column, ...] = COLUMNS) -> str:
    """Column list for ``CREATE TABLE exchanges (...)`` (or ``account_events``, of ``columns``)."""
    return ",\n  ".join(
        f'"{c.name}" {c.duckdb_type}{" NOT NULL" if c.required else ""}' for c in columns
    )


def markdown(columns: tuple[Column, ...] = COLUMNS) -> str:
    """A table in docs/schema.md (the exchanges', or ``ACCOUNT_EVENT_COLUMNS``), generated so that
    docs and code cannot drift apart."""
    lines = [
        "| column | type | required | meaning | input aliases |",
        "|---|---|---|---|---|",
    ]
    for c in columns:
        aliases = ", ".join(f"`{a}`" for a in c.aliases) or "-"
        meaning = c.meaning + (f" One of {', '.join(f'`{v}`' for v in c.values)}." if c.values else "")
        lines.append(
            f"| `{c.name}` | {c.duckdb_type} | {'yes' if c.required else 'no'} | {meaning} | {aliases} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover - documentation helper
    import sys

    print(markdown(ACCOUNT_EVENT_COLUMNS if sys.argv[1:] == ["accounts"] else COLUMNS), end="")
