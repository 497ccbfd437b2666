"""The evidence kinds the statistical tests read, and the null each is tested against.

The kinds, their extractors and their families are those of the linkage (linkage.EVIDENCE,
linkage.account_keys): a family groups kinds that are not independent of one another (an IP and
its /24; a card and a sign-up burst of one operator's accounts), so a block is tested on the
families other than the one that seeded it.
"""

from __future__ import annotations

from dataclasses import dataclass

from distillguard.linkage import EVIDENCE


@dataclass(frozen=True)
class Null:
    """A null model: its name in reasons and reports, and what it assumes."""

    name: str
    assumes: str


BICM = Null("BiCM", "accounts and tokens link independently given their degrees (maximum entropy, "
                    "Saracco et al. 2017); tokens of other kinds independent of the seed's")
BINOMIAL_WINDOW = Null("binomial window", "an account's extremeness is independent of when it signed up "
                                           "or appeared (exchangeable entities; declared organisations "
                                           "counted once)")

#: kind -> family
FAMILY_OF: dict[str, str] = {name: e.family for name, e in EVIDENCE.items()}
