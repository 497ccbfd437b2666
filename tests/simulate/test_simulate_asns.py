"""The simulator's IP-to-ASN table: provider ASNs for hosting, access ISPs for the rest."""

from __future__ import annotations

import ipaddress

import numpy as np

from distillguard.simulate import asns
from distillguard.simulate.network import HOSTING_UNLISTED_V4, HOSTING_UNLISTED_V6


def _v4(*texts: str) -> np.ndarray:
    return asns.asn_of(np.full(len(texts), 4, np.int8), np.zeros(len(texts), np.uint64),
                       np.array([int(ipaddress.IPv4Address(t)) for t in texts], dtype=np.uint64))


def test_every_unlisted_hosting_allocation_has_its_company_asn():
    assert sum(len(c) for _, c in asns._UNLISTED_V4) == len(HOSTING_UNLISTED_V4)
    assert sum(len(c) for _, c in asns._UNLISTED_V6) == len(HOSTING_UNLISTED_V6)
    assert list(_v4("65.108.1.2", "51.38.9.9", "8.209.0.1")) == [24940, 16276, 45102]  # Hetzner, OVH, Alibaba


def test_published_cloud_ranges_carry_the_providers_asn():
    assert list(_v4("3.5.140.1")) == [16509]  # an AWS range in the shipped list


def test_other_addresses_get_an_access_isp_shared_by_their_block():
    a, b, far = _v4("81.2.69.1", "81.2.200.7", "93.184.10.1")
    assert a == b and a in asns.ACCESS_ASNS and far in asns.ACCESS_ASNS


def test_ipv6_hosting_and_access():
    high = np.array([int(ipaddress.IPv6Address("2a01:4f8:10::")) >> 64,
                     int(ipaddress.IPv6Address("2a02:1234:5::")) >> 64], dtype=np.uint64)
    out = asns.asn_of(np.array([6, 6], np.int8), high, np.zeros(2, np.uint64))
    assert out[0] == 24940 and out[1] in asns.ACCESS_ASNS
