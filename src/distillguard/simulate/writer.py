"""Rows -> Arrow row groups in the canonical exchange schema, streamed to Parquet.

Repeated strings (accounts, addresses, user agents, prompts, ...) are built once per row group
as dictionary columns and written as Parquet dictionary pages, so a row costs a few integers
however long its prompt. The file stores no Arrow schema, so readers see the canonical plain
``string`` columns of :data:`distillguard.schema.ARROW_SCHEMA`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from distillguard.schema import ARROW_SCHEMA
from distillguard.simulate.corpora import PIECES, TextTable
from distillguard.simulate.keys import finalize, hex_ids, mix
from distillguard.simulate.asns import asn_of
from distillguard.simulate.network import format_addresses
from distillguard.simulate.population import ROW_RANK_BITS, Accounts, Catalogs, Rows

DICTIONARY_COLUMNS = ("account_id", "api_key_id", "organization_id", "client_ip", "user_agent",
                      "payment_fingerprint", "email_domain", "model", "system_prompt", "prompt")
SMALL_INTEGER_COLUMNS = ("turn_index", "max_tokens", "tool_count", "status_code")
UNSORTED_TEXT = ("exchange_id", "conversation_id", "prompt", "system_prompt")
DICTIONARY_PAGE_LIMIT = 1 << 30  # a row group's distinct prompts fit in one dictionary page

WRITE_SCHEMA = pa.schema([
    pa.field(f.name, pa.dictionary(pa.int32(), pa.string()) if f.name in DICTIONARY_COLUMNS else f.type,
             nullable=f.nullable)
    for f in ARROW_SCHEMA
])


class IdSalts:
    """Per-run salts that make ids unique and unguessable but reproducible from the seed."""

    def __init__(self, salt: int) -> None:
        self.account, self.exchange, self.conversation, self.key, self.org, self.payment = (
            int(mix(salt, 900 + i)) for i in range(6))


def account_ids(ordinal: np.ndarray, salts: IdSalts) -> pa.StringArray:
    # finalize is a bijection, so distinct ordinals give distinct ids
    return hex_ids("acct_", finalize(ordinal.astype(np.uint64) ^ np.uint64(salts.account)))


def _dictionary(codes: np.ndarray, render, valid: np.ndarray | None = None) -> pa.DictionaryArray:
    """Dictionary column from integer codes; ``render(unique_codes)`` gives their strings."""
    if valid is None:
        unique, inverse = np.unique(codes, return_inverse=True)
        return pa.DictionaryArray.from_arrays(pa.array(inverse.astype(np.int32)), render(unique))
    indices = np.zeros(len(codes), dtype=np.int32)
    unique, inverse = np.unique(codes[valid], return_inverse=True)
    indices[valid] = inverse
    return pa.DictionaryArray.from_arrays(pa.array(indices, mask=~valid), render(unique))


def _strings(catalog_items: list[str]):
    table = pa.array(catalog_items, pa.string())
    return lambda unique: table.take(pa.array(unique.astype(np.int64)))


class ExchangeWriter:
    """Appends one row group per block to ``exchanges.parquet`` (and relayed ids alongside)."""

    def __init__(self, path: Path, relayed_path: Path, catalogs: Catalogs, text: TextTable, salts: IdSalts) -> None:
        self.path, self.relayed_path = path, relayed_path
        self.catalogs, self.text, self.salts = catalogs, text, salts
        self._writer = pq.ParquetWriter(
            path, WRITE_SCHEMA, compression="zstd", store_schema=False,
            use_dictionary=[*DICTIONARY_COLUMNS, *SMALL_INTEGER_COLUMNS],
            dictionary_pagesize_limit=DICTIONARY_PAGE_LIMIT,
            write_statistics=[f.name for f in ARROW_SCHEMA if f.name not in UNSORTED_TEXT])
        self._relayed: pq.ParquetWriter | None = None
        self._user_agents = _strings(catalogs.user_agents.items)
        self._domains = _strings(catalogs.domains.items)
        self._models = _strings(catalogs.models.items)
        self._system_prompts = _strings(catalogs.system_prompts.items)
        self.rows_written = 0

    def write(self, rows: Rows, acc: Accounts) -> None:
        order = np.argsort(rows.timestamp, kind="stable")
        rows = rows.take(order)
        table = self.table(rows, acc)
        self._writer.write_table(table, row_group_size=max(len(table), 1))
        self.rows_written += len(table)
        if rows.relayed.any():
            relayed = table.filter(pa.array(rows.relayed)).select(["exchange_id", "account_id"])
            if self._relayed is None:
                self._relayed = pq.ParquetWriter(self.relayed_path, relayed.schema, compression="zstd")
            self._relayed.write_table(relayed)

    def table(self, rows: Rows, acc: Accounts) -> pa.Table:
        salts = self.salts
        ordinal = acc.ordinal[rows.account].astype(np.uint64)
        shift = np.uint64(ROW_RANK_BITS)
        exchange = finalize(((ordinal << shift) | rows.row_rank.astype(np.uint64)) ^ np.uint64(salts.exchange))
        conversation = finalize(((ordinal << shift) | rows.conversation.astype(np.uint64))
                                ^ np.uint64(salts.conversation))
        key = (ordinal << np.uint64(8)) | rows.api_key.astype(np.uint64)
        payment = acc.payment[rows.account]
        system = rows.system_prompt
        ip_text, ip_index = format_addresses(rows.ip_version, rows.ip_high, rows.ip_low)
        max_tokens = rows.max_tokens
        columns = {
            "exchange_id": hex_ids("ex_", exchange),
            "timestamp": pa.array(rows.timestamp, pa.timestamp("us", tz="UTC")),
            "account_id": _dictionary(ordinal, lambda u: account_ids(u, salts)),
            "api_key_id": _dictionary(key, lambda u: hex_ids("key_", finalize(u ^ np.uint64(salts.key)))),
            "organization_id": _dictionary(acc.organization[rows.account],
                                           lambda u: hex_ids("org_", u ^ np.uint64(salts.org))),
            "end_user": self._end_users(rows, acc),
            "client_ip": pa.DictionaryArray.from_arrays(pa.array(ip_index), ip_text),
            "client_asn": pa.array(asn_of(rows.ip_version, rows.ip_high, rows.ip_low), pa.int64()),
            "user_agent": _dictionary(rows.user_agent, self._user_agents),
            "payment_fingerprint": _dictionary(payment, lambda u: hex_ids("pm_", u ^ np.uint64(salts.payment)),
                                               valid=payment != 0),
            "account_created_at": pa.array(acc.created_at[rows.account], pa.timestamp("us", tz="UTC")),
            "email_domain": _dictionary(acc.email_domain[rows.account], self._domains),
            "email_fingerprint": pa.nulls(len(rows.account), pa.string()),  # simulated accounts have no address
            "model": _dictionary(rows.model, self._models),
            "conversation_id": hex_ids("conv_", conversation),
            "turn_index": pa.array(rows.turn, pa.int64()),
            "system_prompt": _dictionary(system, self._system_prompts, valid=system >= 0),
            "prompt": self._prompts(rows.pieces),
            "input_tokens": pa.array(rows.input_tokens, pa.int64()),
            "output_tokens": pa.array(rows.output_tokens, pa.int64()),
            "max_tokens": pa.array(max_tokens, pa.int64(), mask=max_tokens <= 0),
            "tool_count": pa.array(rows.tool_count, pa.int64()),
            "status_code": pa.array(rows.status, pa.int64()),
            "latency_ms": pa.array(rows.latency_ms, pa.float64()),
        }
        return pa.Table.from_arrays([columns[f.name] for f in WRITE_SCHEMA], schema=WRITE_SCHEMA)

    def _end_users(self, rows: Rows, acc: Accounts) -> pa.Array:
        """The end user each row's account names, for accounts that relay end users (a reseller:
        Accounts.end_users > 0): one of its end users per conversation, drawn by hash; null elsewhere."""
        if acc.end_users is None:
            return pa.nulls(len(rows.account), pa.string())
        relays = acc.end_users[rows.account]
        if not relays.any():
            return pa.nulls(len(rows.account), pa.string())
        ordinal = acc.ordinal[rows.account].astype(np.uint64)
        pick = mix(ordinal, 77, rows.conversation.astype(np.uint64)) % np.maximum(relays, 1).astype(np.uint64)
        ids = hex_ids("eu_", finalize(((ordinal << np.uint64(20)) | pick) ^ np.uint64(self.salts.key)))
        return pc.if_else(pa.array(relays > 0), ids, pa.nulls(len(rows.account), pa.string()))

    def _prompts(self, pieces: np.ndarray) -> pa.DictionaryArray:
        # one 64-bit key per distinct combination of pieces (collisions: ~1e-8 per row group)
        combo = mix(*(pieces[:, k] for k in range(PIECES)))
        unique, first, inverse = np.unique(combo, return_index=True, return_inverse=True)
        chosen = pieces[first]
        parts = [self.text.strings.take(pa.array(chosen[:, k].astype(np.int64))) for k in range(PIECES)]
        joined = pc.binary_join_element_wise(*parts, "")
        # different piece combinations can spell the same text; a Parquet dictionary must not
        # repeat a value (Arrow then falls back to plain pages, and not byte-reproducibly)
        dictionary = pc.unique(joined)
        if len(dictionary) < len(joined):
            remap = pc.index_in(joined, value_set=dictionary).to_numpy()
            inverse = remap[inverse]
        else:
            dictionary = joined
        return pa.DictionaryArray.from_arrays(pa.array(inverse.astype(np.int32)), dictionary)

    def close(self) -> None:
        self._writer.close()
        if self._relayed is not None:
            self._relayed.close()
