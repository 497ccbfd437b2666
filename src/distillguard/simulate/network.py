"""Where requests come from: regions, address pools and the rules that pick a client IP.

Cloud, hosting, VPN and relay addresses are drawn from the shipped public lists
(:mod:`distillguard.data`), so a detector that uses those lists sees them as such. Home,
mobile, campus and office addresses come from ISP, carrier and university ranges chosen by
hand below as *plausible* (they are not a registry extract), with every part that overlaps any
shipped list cut away at load time, so they look residential to a list-based classifier.
``hosting_unlisted`` is the hard case: real hosting providers' newer allocations that the
stale public lists miss (also cut against the shipped lists).

An address is a pure function of integer keys (account, lease period, session, request), so
"sticky for a week" or "fresh per request" is just a choice of key.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distillguard import data
from distillguard.simulate.keys import below, mix, unit

# --- hand-picked ranges -----------------------------------------------------------------------
# region -> UTC offsets in minutes (weights), fixed-line ISP ranges, ISP IPv6 prefixes,
# mobile-carrier ranges and mobile IPv6 prefixes. Offsets are those in force April-June.

REGIONS: dict[str, dict] = {
    "us": {
        "utc_offsets": {-240: 0.47, -300: 0.29, -360: 0.06, -420: 0.18},
        "home_v4": ["73.0.0.0/8", "98.192.0.0/10", "67.160.0.0/11", "71.192.0.0/12",
                    "76.96.0.0/11", "99.0.0.0/9", "76.192.0.0/10", "75.0.0.0/11",
                    "96.224.0.0/11", "100.0.0.0/10", "68.96.0.0/12", "70.160.0.0/11",
                    "70.120.0.0/14", "24.0.0.0/12"],
        "home_v6": ["2601::/20", "2600:1700::/28", "2603:6000::/20", "2600:4040::/28"],
        "mobile_v4": ["172.32.0.0/11", "174.192.0.0/10", "166.128.0.0/10"],
        "mobile_v6": ["2607:fb90::/32", "2600:1000::/28", "2600:380::/28"],
    },
    "ca": {
        "utc_offsets": {-240: 0.6, -300: 0.1, -420: 0.3},
        "home_v4": ["99.224.0.0/11", "70.24.0.0/13", "142.112.0.0/12", "24.200.0.0/14"],
        "home_v6": ["2607:fea8::/32", "2001:569::/32"],
        "mobile_v4": ["184.144.0.0/13"],
        "mobile_v6": ["2605:8d80::/32"],
    },
    "uk": {
        "utc_offsets": {60: 1.0},
        "home_v4": ["86.128.0.0/10", "81.128.0.0/12", "2.96.0.0/12", "82.0.0.0/11",
                    "86.0.0.0/13"],
        "home_v6": ["2a00:23c0::/26", "2a02:c7c::/30", "2a02:6b00::/24"],
        "mobile_v4": ["31.64.0.0/11", "92.40.0.0/14"],
        "mobile_v6": ["2a01:4b00::/28"],
    },
    "de": {
        "utc_offsets": {120: 1.0},
        "home_v4": ["79.192.0.0/10", "84.128.0.0/10", "87.128.0.0/10", "91.0.0.0/10",
                    "93.192.0.0/10", "217.224.0.0/11", "188.96.0.0/12"],
        "home_v6": ["2003::/19", "2a02:8100::/26"],
        "mobile_v4": ["176.0.0.0/14", "109.40.0.0/14"],
        "mobile_v6": ["2a01:598::/32", "2a02:3030::/32"],
    },
    "fr": {
        "utc_offsets": {120: 1.0},
        "home_v4": ["90.0.0.0/9", "86.192.0.0/11", "2.0.0.0/12", "82.64.0.0/11",
                    "88.160.0.0/11"],
        "home_v6": ["2a01:c800::/21", "2a01:e00::/26"],
        "mobile_v4": ["92.184.96.0/19", "176.128.0.0/11"],
        "mobile_v6": ["2a01:cd00::/24"],
    },
    "in": {
        "utc_offsets": {330: 1.0},
        "home_v4": ["122.160.0.0/12", "117.192.0.0/10", "106.192.0.0/11", "182.64.0.0/12"],
        "home_v6": ["2401:4900::/26"],
        "mobile_v4": ["49.32.0.0/11", "157.32.0.0/11"],
        "mobile_v6": ["2409:4000::/22", "2405:200::/29"],
    },
    "jp": {
        "utc_offsets": {540: 1.0},
        "home_v4": ["126.0.0.0/8", "153.128.0.0/10", "60.64.0.0/11", "114.144.0.0/12"],
        "home_v6": ["2400:4050::/30", "240b:10::/28"],
        "mobile_v4": ["106.128.0.0/11", "1.72.0.0/13"],
        "mobile_v6": ["2001:268::/32"],
    },
    "kr": {
        "utc_offsets": {540: 1.0},
        "home_v4": ["121.128.0.0/10", "175.192.0.0/10", "211.200.0.0/13"],
        "home_v6": ["2001:e60::/27"],
        "mobile_v4": ["223.32.0.0/11", "39.7.0.0/16"],
        "mobile_v6": ["2001:2d8::/32"],
    },
    "br": {
        "utc_offsets": {-180: 1.0},
        "home_v4": ["187.0.0.0/12", "189.0.0.0/11", "201.0.0.0/12", "177.32.0.0/12"],
        "home_v6": ["2804:14c::/31", "2804:7f0::/28"],
        "mobile_v4": ["179.224.0.0/11"],
        "mobile_v6": ["2804:18::/32"],
    },
    "au": {
        "utc_offsets": {600: 0.85, 480: 0.15},
        "home_v4": ["1.120.0.0/13", "101.160.0.0/11", "110.140.0.0/14", "120.144.0.0/12"],
        "home_v6": ["2001:8003::/32", "2403:5800::/29"],
        "mobile_v4": ["49.176.0.0/12"],
        "mobile_v6": ["2001:8004::/30"],
    },
    "sg": {
        "utc_offsets": {480: 1.0},
        "home_v4": ["116.14.0.0/15", "116.86.0.0/15", "119.74.0.0/15"],
        "home_v6": ["2406:3003::/32"],
        "mobile_v4": ["111.65.32.0/19", "118.200.0.0/15"],
        "mobile_v6": ["2406:3000::/32"],
    },
}

#: campus networks: (e-mail domain, region, UTC offset in minutes, IPv4 range, IPv6 /48).
UNIVERSITIES: tuple[tuple[str, str, int, str, str], ...] = (
    ("berkeley.edu", "us", -420, "128.32.0.0/16", "2607:f140::/48"),
    ("stanford.edu", "us", -420, "171.64.0.0/14", "2607:f6d0::/48"),
    ("cmu.edu", "us", -240, "128.2.0.0/16", "2620:0:2d00::/48"),
    ("harvard.edu", "us", -240, "140.247.0.0/16", ""),
    ("princeton.edu", "us", -240, "128.112.0.0/16", ""),
    ("utoronto.ca", "ca", -240, "128.100.0.0/16", ""),
    ("ox.ac.uk", "uk", 60, "129.67.0.0/16", "2001:630:440::/48"),
    ("cam.ac.uk", "uk", 60, "131.111.0.0/16", "2001:630:210::/48"),
    ("ethz.ch", "de", 120, "129.132.0.0/16", "2001:67c:10ec::/48"),
    ("tu-berlin.de", "de", 120, "130.149.0.0/16", ""),
    ("u-tokyo.ac.jp", "jp", 540, "133.11.0.0/16", ""),
    ("kaist.ac.kr", "kr", 540, "143.248.0.0/16", ""),
    ("iitb.ac.in", "in", 330, "103.21.124.0/22", ""),
    ("usp.br", "br", -180, "143.107.0.0/16", ""),
    ("anu.edu.au", "au", 600, "130.56.0.0/16", ""),
    ("nus.edu.sg", "sg", 480, "137.132.0.0/16", ""),
)

#: company e-mail domains (fictional names) for offices and enterprise organisations
COMPANY_DOMAINS: tuple[str, ...] = (
    "contoso.com", "fabrikam.com", "northwindtraders.com", "adventure-works.com",
    "tailspintoys.com", "wingtiptoys.com", "litwareinc.com", "proseware.com",
    "woodgrovebank.com", "fourthcoffee.com", "lucernepublishing.com", "margiestravel.com",
    "alpineskihouse.com", "blueyonderairlines.com", "cohowinery.com", "humongousinsurance.com",
    "treyresearch.net", "wideworldimporters.com", "graphicdesigninstitute.com", "relecloud.com",
)

#: hosting providers' allocations that the public lists do not (fully) cover
HOSTING_UNLISTED_V4: tuple[str, ...] = (
    # Hetzner
    "65.108.0.0/15", "135.181.0.0/16", "157.90.0.0/16", "162.55.0.0/16", "167.235.0.0/16",
    "49.12.0.0/15", "5.161.0.0/16", "116.202.0.0/15", "128.140.0.0/17", "159.69.0.0/16",
    "168.119.0.0/16", "188.245.0.0/16",
    # OVHcloud
    "51.38.0.0/16", "51.68.0.0/16", "51.75.0.0/16", "51.77.0.0/16", "51.79.0.0/16",
    "51.81.0.0/16", "51.83.0.0/16", "51.89.0.0/16", "51.91.0.0/16", "51.161.0.0/16",
    "51.178.0.0/16", "51.195.0.0/16", "51.210.0.0/16", "51.222.0.0/16", "141.94.0.0/15",
    "146.59.0.0/16",
    # Contabo
    "62.171.128.0/17", "144.91.64.0/18", "161.97.64.0/18", "173.212.192.0/18",
    "207.180.192.0/18", "164.68.96.0/19", "167.86.64.0/18", "38.242.128.0/17",
    # Scaleway
    "51.15.0.0/16", "51.158.0.0/15", "163.172.0.0/16", "212.47.224.0/19",
    # Alibaba Cloud / Tencent Cloud international
    "47.74.0.0/15", "8.208.0.0/12", "43.128.0.0/14", "129.226.0.0/16", "150.109.0.0/16",
    # Hostinger, M247
    "89.116.0.0/16", "147.93.0.0/16", "37.120.128.0/17",
)
HOSTING_UNLISTED_V6: tuple[str, ...] = ("2a01:4f8::/29", "2a01:4f9::/32", "2001:41d0::/32",
                                       "2a02:c207::/32", "2001:bc8::/32")

#: shipped-list sources grouped into the pools a scenario can name
LISTED_POOLS: dict[str, dict] = {
    "cloud": {"categories": ("cloud",),
              "providers": ("amazon", "google", "microsoft", "oracle")},
    "hosting": {"categories": ("datacenter", "cloud"),
                "providers": ("digitalocean", "linode", "vultr", None)},
    "vpn": {"categories": ("vpn",), "providers": None},
    "privacy_relay": {"categories": ("privacy_relay",), "providers": None},
}

_V6_ROUTING_BITS = 64  # addresses are built as a /64 routing prefix plus an interface id
_RANGE_WEIGHT_CAP = 1 << 20  # a /8 is not 65,536 times likelier than a /24 to be picked


# --- range arithmetic -------------------------------------------------------------------------

def _merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in sorted(intervals):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def subtract(candidates: list[tuple[int, int]], blocked: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``candidates`` (inclusive integer intervals) outside every ``blocked`` one."""
    blocked = _merge(blocked)
    starts = [b[0] for b in blocked]
    out: list[tuple[int, int]] = []
    import bisect

    for first, last in _merge(candidates):
        i = max(bisect.bisect_right(starts, first) - 1, 0)
        cursor = first
        while i < len(blocked) and blocked[i][0] <= last:
            b_first, b_last = blocked[i]
            if b_last >= cursor:
                if b_first > cursor:
                    out.append((cursor, b_first - 1))
                cursor = max(cursor, b_last + 1)
            i += 1
            if cursor > last:
                break
        if cursor <= last:
            out.append((cursor, last))
    return out


def _v4(cidrs: list[str] | tuple[str, ...]) -> list[tuple[int, int]]:
    nets = [ipaddress.ip_network(c) for c in cidrs]
    return [(int(n.network_address), int(n.broadcast_address)) for n in nets]


def _v6_routing(cidrs: list[str] | tuple[str, ...]) -> list[tuple[int, int]]:
    """IPv6 prefixes as intervals of their /64 routing prefixes (the top 64 bits)."""
    out = []
    for c in cidrs:
        if not c:
            continue
        net = ipaddress.ip_network(c)
        if net.prefixlen > _V6_ROUTING_BITS:
            continue
        out.append((int(net.network_address) >> 64, int(net.broadcast_address) >> 64))
    return out


@lru_cache(maxsize=1)
def _listed_blocks() -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Every shipped infra range, IPv4 and IPv6 (/64 granularity), for cutting hand-picked ones."""
    v4 = [(r.first, r.last) for r in data.load_infra_ranges(version=4)]
    v6 = [(r.first >> 64, r.last >> 64) for r in data.load_infra_ranges(version=6)]
    return v4, v6


# --- pools ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AddressPool:
    """A weighted set of inclusive integer intervals to draw addresses from.

    For IPv4 the intervals hold addresses; for IPv6 they hold /64 routing prefixes and the
    interface id is drawn separately.
    """

    name: str
    version: int
    first: np.ndarray  # uint64
    size: np.ndarray  # uint64, interval lengths
    cumulative: np.ndarray  # float64, normalised cumulative pick weights

    @classmethod
    def from_intervals(cls, name: str, version: int, intervals: list[tuple[int, int]]) -> AddressPool:
        if not intervals:
            raise ValueError(f"address pool {name!r} is empty")
        first = np.array([a for a, _ in intervals], dtype=np.uint64)
        size = np.array([b - a + 1 for a, b in intervals], dtype=np.uint64)
        weight = np.minimum(size.astype(np.float64), _RANGE_WEIGHT_CAP)
        cumulative = np.cumsum(weight) / weight.sum()
        return cls(name, version, first, size, cumulative)

    def pick(self, key: np.ndarray) -> np.ndarray:
        """One address (IPv4) or /64 prefix (IPv6) per key, a pure function of the key."""
        choice = np.searchsorted(self.cumulative, mix(key, 1) / np.float64(2**64), side="right")
        choice = np.minimum(choice, len(self.first) - 1)
        offset = below(mix(key, 2), self.size[choice].astype(np.float64)).astype(np.uint64)
        return self.first[choice] + offset

    @property
    def addresses(self) -> int:
        return int(self.size.sum())


@dataclass(frozen=True)
class Pools:
    """Every address pool the simulator draws from, built once per run."""

    home_v4: dict[str, AddressPool]
    home_v6: dict[str, AddressPool]
    mobile_v4: dict[str, AddressPool]
    mobile_v6: dict[str, AddressPool]
    listed_v4: dict[str, AddressPool]
    listed_v6: dict[str, AddressPool]
    hosting_unlisted_v4: AddressPool
    hosting_unlisted_v6: AddressPool
    campus_v4: list[AddressPool]
    campus_v6: list[AddressPool | None]

    def datacenter_v4(self, kind: str) -> AddressPool:
        return self.hosting_unlisted_v4 if kind == "hosting_unlisted" else self.listed_v4[kind]

    def datacenter_v6(self, kind: str) -> AddressPool | None:
        return self.hosting_unlisted_v6 if kind == "hosting_unlisted" else self.listed_v6.get(kind)


def _listed(version: int, spec: dict) -> list[tuple[int, int]]:
    ranges = data.load_infra_ranges(version=version, categories=spec["categories"])
    providers = spec["providers"]
    if providers is not None:
        wanted = {p for p in providers if p is not None}
        keep_unnamed = None in providers
        # lord-alfred files name the provider; ipcat "datacenter" rows are the unnamed remainder
        ranges = [r for r in ranges if r.provider in wanted
                  or (keep_unnamed and r.source == "ipcat_datacenters")]
    if version == 4:
        return [(r.first, r.last) for r in ranges]
    return [(r.first >> 64, r.last >> 64) for r in ranges if r.last - r.first >= (1 << 64) - 1]


@lru_cache(maxsize=1)
def build_pools() -> Pools:
    """All pools, with hand-picked ranges cut against every shipped list."""
    blocked_v4, blocked_v6 = _listed_blocks()

    def clean(name: str, version: int, cidrs) -> AddressPool:
        if version == 4:
            return AddressPool.from_intervals(name, 4, subtract(_v4(cidrs), blocked_v4))
        return AddressPool.from_intervals(name, 6, subtract(_v6_routing(cidrs), blocked_v6))

    listed_v4 = {k: AddressPool.from_intervals(k, 4, _merge(_listed(4, s))) for k, s in LISTED_POOLS.items()}
    listed_v6 = {}
    for k, s in LISTED_POOLS.items():
        intervals = _merge(_listed(6, s))
        if intervals:
            listed_v6[k] = AddressPool.from_intervals(k, 6, intervals)
    return Pools(
        home_v4={r: clean(f"home_v4:{r}", 4, s["home_v4"]) for r, s in REGIONS.items()},
        home_v6={r: clean(f"home_v6:{r}", 6, s["home_v6"]) for r, s in REGIONS.items()},
        mobile_v4={r: clean(f"mobile_v4:{r}", 4, s["mobile_v4"]) for r, s in REGIONS.items()},
        mobile_v6={r: clean(f"mobile_v6:{r}", 6, s["mobile_v6"]) for r, s in REGIONS.items()},
        listed_v4=listed_v4,
        listed_v6=listed_v6,
        hosting_unlisted_v4=clean("hosting_unlisted_v4", 4, HOSTING_UNLISTED_V4),
        hosting_unlisted_v6=clean("hosting_unlisted_v6", 6, HOSTING_UNLISTED_V6),
        campus_v4=[clean(f"campus_v4:{u[0]}", 4, [u[3]]) for u in UNIVERSITIES],
        campus_v6=[clean(f"campus_v6:{u[0]}", 6, [u[4]]) if u[4] else None for u in UNIVERSITIES],
    )


# --- formatting -------------------------------------------------------------------------------

def format_addresses(version: np.ndarray, high: np.ndarray, low: np.ndarray) -> tuple[pa.StringArray, np.ndarray]:
    """Distinct addresses as canonical text plus, per row, the index of its text.

    IPv4 rows carry the address in ``low``; IPv6 rows carry the /64 prefix in ``high`` and the
    interface id in ``low``. Returns (dictionary, indices) ready for a dictionary column.
    """
    is_v6 = version == 6
    indices = np.empty(len(version), dtype=np.int32)
    v4_unique, v4_inverse = np.unique(low[~is_v6], return_inverse=True)
    octets = [pa.array(((v4_unique >> np.uint64(s)) & np.uint64(255)).astype(np.uint8)).cast(pa.string())
              for s in (24, 16, 8, 0)]
    v4_text = pc.binary_join_element_wise(*octets, ".") if len(v4_unique) else pa.array([], pa.string())
    indices[~is_v6] = v4_inverse
    if is_v6.any():
        pairs = np.stack([high[is_v6], low[is_v6]], axis=1)
        v6_unique, v6_inverse = np.unique(pairs, axis=0, return_inverse=True)
        v6_text = pa.array([ipaddress.IPv6Address((int(h) << 64) | int(lo)).compressed
                            for h, lo in v6_unique], pa.string())
        indices[is_v6] = v6_inverse.reshape(-1) + len(v4_unique)
        dictionary = pa.concat_arrays([v4_text, v6_text])
    else:
        dictionary = v4_text
    return dictionary, indices


# --- choosing an address per request ----------------------------------------------------------

_DAY_US = 86_400_000_000


@dataclass
class AddressRequest:
    """Per-row facts the access modes need (all arrays of the same length)."""

    account_key: np.ndarray
    home_key: np.ndarray
    group_key: np.ndarray
    region: np.ndarray
    site: np.ndarray
    ipv6: np.ndarray
    lease_days: np.ndarray
    nat_addresses: np.ndarray
    via_cloud: np.ndarray
    timestamp: np.ndarray
    session_key: np.ndarray
    row_key: np.ndarray
    salt: int

    def take(self, index: np.ndarray) -> AddressRequest:
        values = {k: (v[index] if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}
        return AddressRequest(**values)

    def __len__(self) -> int:
        return len(self.timestamp)


Addresses = tuple[np.ndarray, np.ndarray, np.ndarray]  # version, high (IPv6 /64), low (IPv4 or IID)
REGION_NAMES: tuple[str, ...] = tuple(REGIONS)


def _empty(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.full(n, 4, np.int8), np.zeros(n, np.uint64), np.zeros(n, np.uint64)


def _by_region(req: AddressRequest, pools: dict[str, AddressPool], key: np.ndarray,
               rows: np.ndarray | None = None) -> np.ndarray:
    rows = np.arange(len(req)) if rows is None else rows
    out = np.zeros(len(rows), np.uint64)
    for r in np.unique(req.region[rows]):
        here = np.flatnonzero(req.region[rows] == r)
        out[here] = pools[REGION_NAMES[r]].pick(key[rows][here])
    return out


def _interface_ids(key: np.ndarray) -> np.ndarray:
    return mix(key, 97) | np.uint64(1)


def _home(req: AddressRequest, spec, pools: Pools) -> Addresses:
    version, high, low = _empty(len(req))
    lease_us = np.maximum(req.lease_days, 0.5) * _DAY_US
    phase = unit(mix(req.home_key, 61)) * lease_us
    epoch = ((req.timestamp + phase) // lease_us).astype(np.int64)
    low[:] = _by_region(req, pools.home_v4, mix(req.salt, 62, req.home_key, epoch))
    # dual-stack homes prefer IPv6 (happy eyeballs); each device's privacy address rotates daily
    v6 = np.flatnonzero(req.ipv6 & (unit(mix(req.session_key, 63)) < 0.8))
    if len(v6):
        day = req.timestamp[v6] // _DAY_US
        high[v6] = _by_region(req, pools.home_v6, mix(req.salt, 64, req.home_key, epoch // 4), v6)
        low[v6] = _interface_ids(mix(req.account_key[v6], 65, day))
        version[v6] = 6
    return version, high, low


def _mobile(req: AddressRequest, spec, pools: Pools) -> Addresses:
    version, high, low = _empty(len(req))
    # carrier-grade NAT: a few thousand public addresses per region shared by all subscribers
    slot = below(mix(req.session_key, 71), spec.mobile_cgnat_addresses)
    low[:] = _by_region(req, pools.mobile_v4, mix(req.salt, 72, req.region, slot))
    v6 = np.flatnonzero(req.ipv6 & (unit(mix(req.session_key, 73)) < 0.85))
    if len(v6):
        high[v6] = _by_region(req, pools.mobile_v6, mix(req.salt, 74, req.session_key), v6)
        low[v6] = _interface_ids(mix(req.session_key[v6], 75))
        version[v6] = 6
    return version, high, low


def _campus(req: AddressRequest, spec, pools: Pools) -> Addresses:
    version, high, low = _empty(len(req))
    slot = below(mix(req.session_key, 81), req.nat_addresses)
    for site in np.unique(req.site):
        here = np.flatnonzero(req.site == site)
        low[here] = pools.campus_v4[site].pick(mix(req.salt, 82, req.group_key[here], slot[here]))
        v6_pool = pools.campus_v6[site]
        if v6_pool is not None:
            v6 = here[req.ipv6[here] & (unit(mix(req.session_key[here], 83)) < 0.7)]
            if len(v6):
                day = req.timestamp[v6] // _DAY_US
                high[v6] = v6_pool.pick(mix(req.salt, 84, req.account_key[v6]))
                low[v6] = _interface_ids(mix(req.account_key[v6], 85, day))
                version[v6] = 6
    return version, high, low


def _office(req: AddressRequest, spec, pools: Pools) -> Addresses:
    version, high, low = _empty(len(req))
    slot = below(mix(req.session_key, 91), req.nat_addresses)
    key = mix(req.salt, 92, req.group_key, slot)
    low[:] = _by_region(req, pools.home_v4, key)
    cloud = np.flatnonzero(req.via_cloud)
    if len(cloud):
        low[cloud] = pools.listed_v4["cloud"].pick(key[cloud])
    return version, high, low


def _pool_by_group(req: AddressRequest, spec, pools: Pools, rotation_key: np.ndarray, tag: int) -> Addresses:
    version, high, low = _empty(len(req))
    names = list(spec.datacenter_sources)
    cumulative = np.cumsum([spec.datacenter_sources[n] for n in names], dtype=np.float64)
    source = np.minimum(np.searchsorted(cumulative / cumulative[-1], unit(mix(req.group_key, tag)),
                                        side="right"), len(names) - 1)
    slot = below(mix(rotation_key, tag + 1), spec.pool_size)
    key = mix(req.salt, tag + 2, req.group_key, slot)
    for s, name in enumerate(names):
        here = np.flatnonzero(source == s)
        if len(here):
            low[here] = pools.datacenter_v4(name).pick(key[here])
    return version, high, low


def _cloud(req: AddressRequest, spec, pools: Pools) -> Addresses:
    return _pool_by_group(req, spec, pools, req.row_key, 100)


def _rotation_key(req: AddressRequest, spec) -> np.ndarray:
    return {"per_request": req.row_key, "per_session": req.session_key,
            "per_account": req.account_key}[spec.rotation]


def _datacenter_proxy(req: AddressRequest, spec, pools: Pools) -> Addresses:
    return _pool_by_group(req, spec, pools, _rotation_key(req, spec), 110)


def _residential_proxy(req: AddressRequest, spec, pools: Pools) -> Addresses:
    version, high, low = _empty(len(req))
    key = mix(req.salt, 120, _rotation_key(req, spec))
    weights = spec.proxy_regions or {r: 1.0 for r in REGION_NAMES}
    names = list(weights)
    cumulative = np.cumsum([weights[n] for n in names], dtype=np.float64)
    region = np.minimum(np.searchsorted(cumulative / cumulative[-1], unit(mix(key, 121)), side="right"),
                        len(names) - 1)
    for r, name in enumerate(names):
        here = np.flatnonzero(region == r)
        if len(here):
            low[here] = pools.home_v4[name].pick(key[here])
    return version, high, low


def _mobile_proxy(req: AddressRequest, spec, pools: Pools) -> Addresses:
    """A mobile proxy network: exits are phones behind carrier NAT, so each exit address is one a
    carrier's ordinary subscribers share; a new exit per request, session or account (``rotation``)."""
    version, high, low = _empty(len(req))
    key = mix(req.salt, 150, _rotation_key(req, spec))
    weights = spec.proxy_regions or {r: 1.0 for r in REGION_NAMES}
    names = list(weights)
    cumulative = np.cumsum([weights[n] for n in names], dtype=np.float64)
    region = np.minimum(np.searchsorted(cumulative / cumulative[-1], unit(mix(key, 151)), side="right"),
                        len(names) - 1)
    slot = below(mix(key, 152), spec.mobile_cgnat_addresses)
    for r, name in enumerate(names):
        here = np.flatnonzero(region == r)
        if len(here):
            # the same carrier-NAT slots the region's mobile users get (_mobile: salt, 72, region, slot)
            low[here] = pools.mobile_v4[name].pick(mix(req.salt, 72, REGION_NAMES.index(name), slot[here]))
    return version, high, low


def _vpn(req: AddressRequest, spec, pools: Pools) -> Addresses:
    version, high, low = _empty(len(req))
    low[:] = pools.listed_v4["vpn"].pick(mix(req.salt, 130, req.session_key))
    return version, high, low


def _privacy_relay(req: AddressRequest, spec, pools: Pools) -> Addresses:
    version, high, low = _empty(len(req))
    low[:] = pools.listed_v4["privacy_relay"].pick(mix(req.salt, 140, req.session_key))
    v6 = np.flatnonzero(unit(mix(req.session_key, 141)) < 0.6)
    if len(v6) and "privacy_relay" in pools.listed_v6:
        high[v6] = pools.listed_v6["privacy_relay"].pick(mix(req.salt, 142, req.session_key[v6]))
        low[v6] = _interface_ids(mix(req.session_key[v6], 143))
        version[v6] = 6
    return version, high, low


#: access mode -> address rule (scenario field network.modes names these)
ADDRESS_MODES = {
    "home": _home,
    "mobile": _mobile,
    "campus": _campus,
    "office": _office,
    "cloud": _cloud,
    "vpn": _vpn,
    "privacy_relay": _privacy_relay,
    "datacenter_proxy": _datacenter_proxy,
    "residential_proxy": _residential_proxy,
    "mobile_proxy": _mobile_proxy,
}
