"""Which autonomous system announces a simulated address: the simulator's IP-to-ASN table.

Gateways behind a CDN or cloud load balancer log the client's ASN next to its address; the
simulator gives each address the ASN such a table would: the provider's own AS for the
published cloud and hosting ranges (data/infra), the hosting company's AS for the allocations
the lists miss (network.HOSTING_UNLISTED_*), and for any other address an access ISP's AS
chosen by its /16 (IPv4) or /32 (IPv6), so that neighbouring addresses share one. The ASNs are
the real ones of those networks; which ISP serves a residential block is made up.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

import numpy as np

from distillguard.data import load_asns, load_infra_ranges
from distillguard.simulate.network import HOSTING_UNLISTED_V4, HOSTING_UNLISTED_V6

#: the ASN of the providers named by the shipped range lists
PROVIDER_ASNS: dict[str, int] = {
    "amazon": 16509, "google": 15169, "googlebot": 15169, "microsoft": 8075, "bing": 8075, "oracle": 31898,
    "digitalocean": 14061, "linode": 63949, "vultr": 20473, "cloudflare": 13335, "github": 36459,
    "facebook": 32934, "twitter": 13414, "telegram": 62041, "apple": 714, "openai": 8075,
    "perplexity": 16509, "duckduckbot": 8075, "duckassistbot": 8075, "pingdom": 62000,
    "statuscake": 20473, "protonvpn": 62371, "SoftLayer": 36351, "OVH": 16276,
}
#: hosting allocations the lists miss, by company (in the order of network.HOSTING_UNLISTED_*)
_UNLISTED_V4: tuple[tuple[int, tuple[str, ...]], ...] = (
    (24940, HOSTING_UNLISTED_V4[0:12]),   # Hetzner
    (16276, HOSTING_UNLISTED_V4[12:28]),  # OVHcloud
    (51167, HOSTING_UNLISTED_V4[28:36]),  # Contabo
    (12876, HOSTING_UNLISTED_V4[36:40]),  # Scaleway
    (45102, HOSTING_UNLISTED_V4[40:42]),  # Alibaba Cloud
    (132203, HOSTING_UNLISTED_V4[42:45]),  # Tencent Cloud
    (47583, HOSTING_UNLISTED_V4[45:47]),  # Hostinger
    (9009, HOSTING_UNLISTED_V4[47:48]),   # M247
)
_UNLISTED_V6: tuple[tuple[int, tuple[str, ...]], ...] = (
    (24940, HOSTING_UNLISTED_V6[0:2]), (16276, HOSTING_UNLISTED_V6[2:3]), (51167, HOSTING_UNLISTED_V6[3:4]),
    (12876, HOSTING_UNLISTED_V6[4:5]),
)
#: access ISPs (residential, mobile, business lines) that residential blocks are spread over
ACCESS_ASNS: tuple[int, ...] = (
    7922, 20115, 7018, 701, 22773, 5650, 6128, 812, 577, 3320, 3215, 2856, 5089, 12322, 3352, 1136, 6830,
    4134, 4837, 9808, 55836, 45609, 4713, 2516, 4766, 7545, 1221, 18881, 28573, 8151, 12389, 9121,
)


class _Table:
    """Disjoint sorted intervals -> ASN, for numpy lookups (IPv6 keyed on its top 64 bits)."""

    def __init__(self, intervals: list[tuple[int, int, int]]) -> None:
        intervals.sort()
        starts, ends, asns = [], [], []
        for first, last, asn in intervals:
            if ends and first <= ends[-1]:  # overlaps the previous: keep the earlier one's claim
                if last <= ends[-1]:
                    continue
                first = ends[-1] + 1
            starts.append(first)
            ends.append(last)
            asns.append(asn)
        self.starts = np.array(starts, dtype=np.uint64)
        self.ends = np.array(ends, dtype=np.uint64)
        self.asns = np.array(asns, dtype=np.int64)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """ASN per key, 0 where no interval holds it."""
        out = np.zeros(len(keys), dtype=np.int64)
        if not len(self.starts) or not len(keys):
            return out
        i = np.searchsorted(self.starts, keys, side="right").astype(np.int64) - 1
        hit = (i >= 0) & (keys <= self.ends[np.maximum(i, 0)])
        out[hit] = self.asns[i[hit]]
        return out


def _hosting_asn(provider: str) -> int:
    """A listed range's ASN: its provider's, else a hosting AS chosen by the provider's name."""
    if provider in PROVIDER_ASNS:
        return PROVIDER_ASNS[provider]
    hosting = sorted(e.asn for e in load_asns())
    return hosting[int.from_bytes(provider.encode()[:8].ljust(8, b"\0"), "big") % len(hosting)]


@lru_cache(maxsize=2)
def _table(version: int) -> _Table:
    shift = 0 if version == 4 else 64
    intervals: list[tuple[int, int, int]] = []
    for asn, cidrs in (_UNLISTED_V4 if version == 4 else _UNLISTED_V6):
        for cidr in cidrs:
            net = ipaddress.ip_network(cidr)
            intervals.append((int(net.network_address) >> shift, int(net.broadcast_address) >> shift, asn))
    for r in load_infra_ranges(version):
        intervals.append((r.first >> shift, r.last >> shift, _hosting_asn(r.provider)))
    return _Table(intervals)


def asn_of(version: np.ndarray, high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """The ASN of each simulated address (network.Addresses: IPv4 in ``low``, IPv6's /64 in ``high``)."""
    out = np.zeros(len(version), dtype=np.int64)
    is_v6 = version == 6
    v4 = low[~is_v6].astype(np.uint64)
    v6 = high[is_v6].astype(np.uint64)
    hosted4, hosted6 = _table(4).lookup(v4), _table(6).lookup(v6)
    access = np.array(ACCESS_ASNS, dtype=np.int64)
    # the access ISP of a block: a multiplicative hash of its /16 (IPv4) or /32 (IPv6)
    golden = np.uint64(0x9E3779B97F4A7C15)
    isp4 = access[((v4 >> np.uint64(16)) * golden >> np.uint64(40)) % np.uint64(len(access))]
    isp6 = access[((v6 >> np.uint64(32)) * golden >> np.uint64(40)) % np.uint64(len(access))]
    out[~is_v6] = np.where(hosted4 > 0, hosted4, isp4)
    out[is_v6] = np.where(hosted6 > 0, hosted6, isp6)
    return out
