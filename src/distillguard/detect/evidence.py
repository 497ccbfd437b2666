"""The evidence kinds the statistical tests read, and the null each is tested against.

The linkage's kinds (linkage.EVIDENCE, extracted by linkage.account_keys) are read as they are;
the kinds below are extracted here for the tests alone. A family groups kinds that are not
independent of one another (an IP, its /24 and its ASN; a card and a sign-up burst of one
operator's accounts), so a block is tested on the families other than the one that seeded it,
and within a family the kinds are never summed as if independent (blocks._family_test).
"""

from __future__ import annotations

from dataclasses import dataclass

import ibis
import ibis.expr.types as ir

from distillguard.detect.linkage import EVIDENCE


@dataclass(frozen=True)
class Null:
    """A null model: its name in reasons and reports, and what it assumes."""

    name: str
    assumes: str


BICM = Null("BiCM", "accounts and tokens link independently given their degrees (maximum entropy, "
                    "Saracco et al. 2017); tokens of other families independent of the seed's")
BINOMIAL_WINDOW = Null("earlier arrivals", "an entity that signed up or appeared in a window is exchangeable "
                                            "with those that arrived before it (beta-binomial count of extremes; "
                                            "declared organisations counted once)")


@dataclass(frozen=True)
class Kind:
    """An evidence kind of the statistical tests only: its family and what a shared token means."""

    name: str
    family: str
    meaning: str


#: a model first used this long after the window opens was released inside it (features.NEW_MODEL_AFTER_S)
_NEW_MODEL_AFTER_S = 2 * 86400
#: width of a sign-up window token, seconds
SIGNUP_WINDOW_S = 600

KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("asn", "network", "same autonomous system"),
    Kind("signup_window", "time", "created in the same 10 minutes, whatever the e-mail domain"),
    Kind("pivot", "time", "first used a newly released model in the same hour"),
)}

#: the linkage's kinds read off a clock, which the tests put in one family: people in one place sign
#: up, start sessions and try a new model on one schedule (a lab session, a class, a launch), so
#: these kinds are not independent of each other nor, for co-located accounts, of a shared address
CLOCK_KINDS = ("signup_burst", "sync")

#: kind -> family, for every kind the tests read
FAMILY_OF: dict[str, str] = {**{name: ("time" if name in CLOCK_KINDS else e.family) for name, e in EVIDENCE.items()},
                             **{name: k.family for name, k in KINDS.items()}}


def statistical_keys(ex: ir.Table) -> ir.Table:
    """(account_id, kind, key) of the kinds in :data:`KINDS`; ``ex`` is features.with_seconds."""
    asn = ex.filter(ex.client_asn.notnull()).select("account_id", kind=ibis.literal("asn"),
                                                    key=ex.client_asn.cast("string"))
    created = ex.filter(ex.account_created_at.notnull()).select("account_id", "account_created_at").distinct()
    signup = created.select("account_id", kind=ibis.literal("signup_window"),
                            key=(created.account_created_at.epoch_seconds() // SIGNUP_WINDOW_S).cast("string"))
    opened = ex.aggregate(opened=ex.ts_s.min())
    models = ex.filter(ex.model.notnull())
    first = models.group_by(["account_id", "model"]).aggregate(first_use=models.ts_s.min())
    released = first.group_by("model").aggregate(released=first.first_use.min()).cross_join(opened)
    new = released.filter(released.released >= released.opened + _NEW_MODEL_AFTER_S).select("model")
    uses = first.join(new, "model")
    pivot = uses.select("account_id", kind=ibis.literal("pivot"),
                        key=uses.model + "@" + (uses.first_use // 3600).cast("int64").cast("string"))
    return ibis.union(asn.distinct(), signup, pivot.distinct(), distinct=True)
