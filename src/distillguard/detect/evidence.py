"""Every evidence kind, declared once: what a shared key means and who reads it how.

A kind is a *shared key* two accounts can hold (a card, an address, a framing n-gram, a session
slot, ...). One :class:`Kind` row says everything the rest of the package needs of it: its
extractor (detect/extract.py), its weight in the linkage (0: read by the statistical tests
only), its family, whether the gateway's inheritance may use it, how reports and STIX show its
keys. Linkage, inheritance, the statistical tests, the report writers and the docs generator
read this table and never name a kind themselves, so adding one is one row plus its extractor.

A family groups kinds that are not independent of one another (an IP, its /24 and its ASN; a
card and a sign-up burst of one operator's accounts): a block is tested on the families other
than the one that seeded it, and within a family the kinds are never summed as if independent
(blocks._kind_p_values).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import ibis
import ibis.expr.types as ir

from distillguard.detect import extract
from distillguard.detect.extract import SIGNUP_WINDOW_S, RequestFacts, Sources  # noqa: F401 (re-exported)


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
SHARED_WORDING = Null("the population", "the holders of a shared wording are exchangeable with every other entity "
                                        "in the behaviour the wording does not set, and in when they were first seen "
                                        "with the entities outside them as extreme (beta-binomial counts of extremes; "
                                        "both must be surprising)")
INDEPENDENT_TIES = Null("independent ties", "an organic entity's tie to a campaign in one family (holding one of "
                                            "its tokens, or signing up near one of its members) is independent of "
                                            "its tie in another family: where it connects from, with which "
                                            "software and when it signed up (Fisher's exact test of the entities "
                                            "tied in both; their cost from each tie's rate among the entities "
                                            "without the other)")
ONE_OWNER = Null("one owner", "the holders of a token with one owner (a card: Kind.alone) are one customer's "
                              "accounts, all organic or none; the false share of the accepted results that hold "
                              "some of them bounds the chance that none is")


@dataclass(frozen=True)
class Kind:
    """One evidence kind.

    ``family``: account, network, client (software and its templates) or timing for linkage and
    inheritance, or ``outside``: matched against imported indicators, read by neither; ``test_family`` the family the statistical tests put it in (None: ``family``).
    ``weight``: how strongly a shared key links two accounts (0: not linked, tests only);
    ``min_shared``: fewer shared keys than this is coincidence. ``cap``: which holder cap
    linkage.informative_keys applies (``share`` of accounts, ``habitual`` framing's wider share,
    or ``slot``: the crowded-slot cap). ``inheritable``: a new account's request can show it
    (``request_extractor``), so the gateway may match it against a campaign's indicators;
    ``habitual``: it counts only once used habitually; ``alone``: it has one owner and suffices alone (a card: every holder is the owner's account,
    so inheritance matches it alone and the tests' results extend to its other holders,
    verdicts._owner_offers);
    ``signature``: a long enough key suffices alone; ``ngrams``: its keys are n-grams of one text,
    counted distinct. ``key_form``: what a key is (``address``, ``range``, ``agent``, ``text``,
    ``signup_hour``, ``opaque``, ...); ``text`` keys are redacted as text in reports.
    ``population``: a key's holders are a population, not a place (an autonomous system holds a
    network operator's unrelated customers, a client string a software's users): its block never
    reaches throttle on their behaviour (verdicts._behaving_blocks). ``associates``: holding a
    key a found campaign's members hold ties an entity to the campaign (detect/associates.py):
    where it connects from (network) or with which software (client), taken with each other and
    with when it signed up as independent for an organic entity; not the kinds an entity's
    activity or geography sets (an autonomous system, session slots, a model pivot: heavier and
    same-time-zone users hold more of them in every family at once). ``wording``:
    how reports name it; ``stix``: how STIX shares it (``address``, ``user-agent``,
    ``prompt-template``, or None: meaningless outside this provider).
    """

    name: str
    family: str
    meaning: str
    extractor: Callable[[Sources], ir.Table]
    weight: float = 0.0
    min_shared: int = 1
    test_family: str | None = None
    cap: str = "share"
    inheritable: bool = False
    request_extractor: Callable[[RequestFacts], list[str]] | None = None
    habitual: bool = False
    alone: bool = False
    signature: bool = False
    ngrams: bool = False
    population: bool = False
    associates: bool = False
    key_form: str = "opaque"
    wording: str = ""
    stix: str | None = None

    @property
    def linked(self) -> bool:
        return self.weight > 0

    @property
    def text(self) -> bool:
        return self.key_form == "text"

    @property
    def tests_family(self) -> str:
        return self.test_family or self.family


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("payment", "account", "same payment method fingerprint", extract.payment, 3.0,
         inheritable=True, request_extractor=extract.payment_of_request, alone=True, associates=True,
         wording="payment method"),
    Kind("ip", "network", "same client IP addresses", extract.ip, 1.5, inheritable=True,
         request_extractor=extract.ip_of_request, associates=True, key_form="address", wording="address",
         stix="address"),
    Kind("subnet", "network", "same /24 (IPv4) or /48 (IPv6) subnets", extract.subnet, 1.0, inheritable=True,
         request_extractor=extract.subnet_of_request, associates=True, key_form="range", wording="subnet",
         stix="address"),
    # a client string's holders are that software's users, whose behaviour differs from everyone
    # else's by composition (an enterprise SDK's users are offices), as an autonomous system's do
    Kind("user_agent", "client", "same user agent strings", extract.user_agent, 0.5, key_form="agent",
         population=True, associates=True, wording="user agent", stix="user-agent"),
    # the tests put the kinds read off a clock in one family: people in one place sign up, start
    # sessions and try a new model on one schedule (a lab session, a class, a launch), so these
    # kinds are not independent of each other nor, for co-located accounts, of a shared address
    Kind("signup_burst", "account", "created in the same hour with the same e-mail domain", extract.signup_burst,
         1.5, test_family="time", inheritable=True, request_extractor=extract.signup_burst_of_request,
         key_form="signup_hour", wording="sign-up hour"),
    Kind("scaffold", "client", "same prompt framing n-grams (opening or closing words)", extract.scaffold, 2.0,
         min_shared=3, cap="habitual", inheritable=True, request_extractor=extract.scaffold_of_request,
         habitual=True, ngrams=True, associates=True, key_form="text", wording="prompt framing n-gram",
         stix="prompt-template"),
    # below min_pair_weight on its own: apps and SDK defaults share system prompts too
    Kind("system_prompt", "client", "same system prompts, used habitually (at least `scaffold_min_uses` times and "
         "`system_prompt_min_share` of the account's requests)", extract.system_prompt, 0.8,
         cap="habitual", inheritable=True, request_extractor=extract.system_prompt_of_request, habitual=True,
         signature=True, associates=True, key_form="text", wording="system prompt", stix="prompt-template"),
    # SynchroTrap's point: synchrony counts only when sustained, never for one shared moment
    Kind("sync", "timing", "sessions started in the same 5-minute slots", extract.sync, 2.0, min_shared=3,
         test_family="time", cap="slot", key_form="slot", wording="session slot"),
    Kind("asn", "network", "same autonomous system", extract.asn, population=True, wording="autonomous system"),
    Kind("signup_window", "time", "created in the same 10 minutes, whatever the e-mail domain",
         extract.signup_window, key_form="window", wording="sign-up window"),
    Kind("pivot", "time", "first used a newly released model in the same hour", extract.pivot,
         key_form="model_hour", wording="new-model pivot"),
    # not shared between accounts: each key is an indicator another party shared (intel import);
    # its matches are reasons weighed by confidence and age, capped by the policy's intel section
    Kind("intel_match", "outside", "address, range, autonomous system, e-mail domain, user agent or payment "
         "fingerprint of an imported threat-intelligence indicator", extract.intel_match,
         wording="imported indicator"),
)}

#: the kinds linkage links accounts by (weight > 0), in declaration order
LINKED: dict[str, Kind] = {n: k for n, k in KINDS.items() if k.linked}
#: kind -> family, for every kind the statistical tests read
FAMILY_OF: dict[str, str] = {n: k.tests_family for n, k in KINDS.items()}
#: the kinds a single request can show, which the gateway's inheritance matches
INHERITABLE: tuple[str, ...] = tuple(n for n, k in KINDS.items() if k.inheritable)
#: the kinds a new account must use habitually before they count
HABITUAL: tuple[str, ...] = tuple(n for n, k in KINDS.items() if k.habitual)
#: the kinds that suffice alone for inheritance
ALONE: tuple[str, ...] = tuple(n for n, k in KINDS.items() if k.alone)
#: the kinds matched against imported indicators rather than shared between accounts
OUTSIDE: tuple[str, ...] = tuple(n for n, k in KINDS.items() if k.family == "outside")
#: the kinds whose holders are populations rather than places (Kind.population)
POPULATIONS: tuple[str, ...] = tuple(n for n, k in KINDS.items() if k.population)
#: the kinds whose keys are prompt text (normalised)
TEXT: tuple[str, ...] = tuple(n for n, k in KINDS.items() if k.text)


def with_form(form: str) -> tuple[str, ...]:
    """The kinds whose keys have ``form`` (Kind.key_form)."""
    return tuple(n for n, k in KINDS.items() if k.key_form == form)


def statistical_keys(ex: ir.Table, events: ir.Table | None = None) -> ir.Table:
    """(account_id, kind, key) of the kinds only the statistical tests read; ``ex`` is features.with_seconds,
    ``events`` the account events in the window (features.account_events) or None."""
    src = Sources(ex, events=events)
    return ibis.union(*(k.extractor(src) for n, k in KINDS.items() if not k.linked and n not in OUTSIDE),
                      distinct=True)


def request_keys(request: RequestFacts) -> list[tuple[str, str]]:
    """(kind, key) of one request, for every inheritable kind."""
    return [(n, key) for n, k in KINDS.items() if k.inheritable for key in k.request_extractor(request)]


def markdown() -> str:
    """The table of every kind, for docs/signals.md."""
    lines = ["| evidence | family | weight | minimum shared keys | inherited | meaning |", "|---|---|---|---|---|---|"]
    for k in KINDS.values():
        family = k.family if k.tests_family == k.family else f"{k.family} (tests: {k.tests_family})"
        weight = f"{k.weight:g}" if k.linked else "tests only"
        inherited = ("alone" if k.alone else "habitual" if k.habitual else "yes") if k.inheritable else ""
        lines.append(f"| `{k.name}` | {family} | {weight} | {k.min_shared} | {inherited} | {k.meaning} |")
    return "\n".join(lines) + "\n"
