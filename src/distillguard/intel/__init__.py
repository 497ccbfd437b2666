"""Threat intelligence flowing in: indicators other providers share, matched without sharing raw
data, and actors that tie campaigns together over time (docs/reports.md).

indicators.py is the indicator row and its table; stix_in.py, misp_in.py and taxii_in.py read
the three formats into it; hashed.py exchanges payment fingerprints, e-mail addresses (as their
fingerprints) and e-mail domains as keyed hashes; actors.py links campaigns to actors under a
stated null.
"""
