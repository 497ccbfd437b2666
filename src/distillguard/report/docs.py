"""docs/signals.md, generated from the declared signals and evidence kinds (so they cannot drift)."""

from distillguard.detect import evidence, inherit, signals
from distillguard.ingest import enrich

_INTRO = "# Signals, linkage evidence and campaign scoring\n\nGenerated from `src/distillguard/detect/signals.py` and `src/distillguard/detect/evidence.py`\n(`python -m distillguard.report.docs`); a test keeps this file in step with the code.\n\n## Per-account signals\n\nNo signal acts alone. Each fired signal adds its weight to the account's *suspicion* (weighted\nshare of fired signals, 0..1). A lone account is at most *monitored* (suspicion >= the policy's\n`account_monitor`); throttling and stronger actions need membership of a scored campaign.\n\n"

_LINKAGE = "Accounts holding the same key are linked. Per evidence kind the pair similarity is the cosine\nof the two accounts' idf-weighted key sets (idf = 1 / log2(1 + holders)), over keys that at\nleast two and at most a small share of accounts hold; the pair weight is the sum over kinds of\nweight x similarity. Accounts of one declared organization are never linked to each other.\nSession-start slots count only when at most `sync_max_holders` (12) accounts start sessions in\nthem: a crowded slot is chance. Scaffold n-grams come from a sample of up to " + str(enrich.SAMPLE_PROMPTS) + " prompts per\naccount (a deterministic draw), as do the capability shares and prompt repeat shares.\n\n"

_CAMPAIGN = (
    "\n\nLeiden clusters of the weighted graph. A clustered account is a member only if the keys it\n"
    "shares with at least two other members of its cluster (each key once, kind weight x idf) add up\n"
    "to `min_member_evidence` (3) and tie it to at least `min_members - 1` other members: one\n"
    "coincidence shared with many campaign accounts is one fact, and a team's card and office address\n"
    "tie it to each other, not to an operation (campaigns.member_evidence). Each cluster is scored\n"
    "`structure x operation x (0.5 + 0.5 x complementarity)`:\n\n"
    "- `structure = 1 - exp(-internal weight per member / 6)`;\n"
    "- `operation = 1 - (1 - max(automation, (automation + collective) / 2)) x (1 - recruited) x (1 - pivoted)`,\n"
    "  where `automation` is the members' mean suspicion, `collective` the share of members tied by at\n"
    "  least two independent families of evidence (account, network, client, timing, coordination), and\n"
    "  `recruited` and `pivoted` the shares of members that took part in the cluster's collective acts\n"
    "  below (0 where the cluster performed none, so a community of customers scores as without them);\n"
    "- *recruited together*: a fresh member (first request at most 14 days after its creation) created\n"
    "  within 12 h of at least 2 other fresh members of its cluster with other e-mail domains, which\n"
    "  outnumber its wave mates of its own domain, in a cluster where at least 15% of members were\n"
    "  (campaigns.recruited_together): operations open accounts in waves across domains shortly before\n"
    "  use, while a class or a team that onboards together shows its school's or company's domain;\n"
    "- *pivoted together* (`coordination`): a member that first used a newly released model within 24 h\n"
    "  of its release, in a cluster where at least 15% of members did and at least 4 times the\n"
    "  population's share (campaigns.pivoted_together): an operation re-points its fleet within hours,\n"
    "  while launch-day adopters among customers are spread over all communities;\n"
    "- recruitment adds to a member's tie the evidence of a sign-up burst key (`act_weight`, 1.5) and the\n"
    "  account family (unless a card gave it), except for a member that holds a sign-up burst key of its\n"
    "  cluster (its creation time already counts) or is tied by addresses alone (a residential neighbour\n"
    "  of proxy exits who signed up during a wave); the pivot adds the coordination family, no evidence\n"
    "  mass (one customer in ten tries a new model on its first day); each act is a reason line with the\n"
    "  member's values and the thresholds;\n"
    "- `complementarity` = distinct prompts / exchanges in the cluster (a sweep of a corpus, unlike\n"
    "  benchmark runners who all send the same public items).\n\n"
    "Flagged clusters linked to each other by at least `merge_link` of edge weight are one campaign\n"
    "(the cells of one operation). The campaign score, its cells and the members' ties describe the\n"
    "campaign and name it; they never act on their own: a rule-based campaign is monitored at most\n"
    "(`campaign_action` maps its score to a recommended action, capped at monitor). Throttle and\n"
    "stronger come only from the calibrated tests of detect/ (block, cohort and wording tests under the\n"
    "policy's error budget, docs/detection.md), from an earlier scan's finding still held, or from\n"
    "inheritance.\n"
    "The rules fitted to one simulator that used to turn the score into a throttle or block (the\n"
    "member-evidence, reach and own-suspicion thresholds for weakly tied members, and the anchoring\n"
    "edge to a campaign's firm core) are removed; docs/detection.md lists them.\n"
)


_INHERIT = (
    "\n## Inheritance between scans\n\n"
    "Campaigns keep recruiting fresh accounts, and a scan judges an account only once it has traffic.\n"
    "Each scan therefore exports, per campaign throttled or stronger, its *indicators* (`indicators.parquet`,\n"
    "table `indicators` in the store): keys of the kinds "
    + ", ".join(f"`{k}`" for k in inherit.KINDS) + " that at least\n"
    "`inherit.min_holders` (3) of its throttled members hold and that no account outside the campaign\n"
    "holds (its members the scan only monitors as weakly tied may; so may *new* accounts in no\n"
    "campaign-sized cluster, which are what inheritance judges). A subnet is one only where it is a\n"
    "listed hosting range: a residential /24 is a street of households, and a residential proxy's exits\n"
    "are households' connections, so the next customer there is no recruit (the exit address itself\n"
    "stays an indicator). A sign-up hour is one only at an e-mail domain with at most\n"
    "`inherit.framing_outside` of its accounts outside campaign-sized clusters (a domain the operation\n"
    "registered, not a webmail domain whose quiet hour only the campaign used in the lookback). A system prompt or scaffold n-gram needs\n"
    "only `inherit.framing_share` (90%) of its holders to be the campaign's throttled members, and at\n"
    "most `inherit.framing_outside` (2%) outside every campaign-sized cluster: an operation that sends\n"
    "its framing from a thousand accounts always has a few that no scan has tied yet, while a popular\n"
    "tool's prompt has many customers of standing. A *new* account (first seen at most\n"
    "`inherit.new_account_hours`, 72, before the request, and created at most\n"
    "`inherit.max_account_age_days`, 14, before it where its creation time is known)\n"
    "inherits the campaign's action, capped at `inherit.action` (throttle), from the request that\n"
    "completes the evidence: the campaign's card alone; the campaign's own system prompt of at least\n"
    "`inherit.signature_words` (12) words alone (its script's signature: an adaptive operation gives\n"
    "every account its own card, addresses and e-mail domain, and in a replay of `adaptive-2026` each\n"
    "recruit leaked ~20 exchanges before a scan could tie it); or keys from `inherit.min_families` (2)\n"
    "independent families (account: sign-up burst; network: IP, subnet; client: system prompt, scaffold\n"
    "n-gram). A residential neighbour of a proxy exit (network only) or a user who pasted a campaign's\n"
    "short framing (client only) is not enough, and a system prompt or scaffold n-gram counts only once\n"
    "`inherit.habitual_uses` (2) of the account's requests carried it: the indicators say the campaign's\n"
    "accounts use it habitually, and a customer who once typed a chain-of-thought phrase of the\n"
    "campaign's framing is not a recruit. Scaffold framing counts only once `inherit.scaffold_ngrams` (2)\n"
    "distinct n-grams of the campaign's matched: its script's framing sentence spans several, while a\n"
    "customer's own phrase (\"do not skip any\") shares one by chance. The gateway applies this per request; the benchmark's replay\n"
    "models it (inherit.py, bench/replay.py).\n"
)


def signals_markdown() -> str:
    return (_INTRO + signals.markdown() + "\n## Linkage evidence (account pairs)\n\n" + _LINKAGE
            + evidence.markdown() + "\n## Campaign score" + _CAMPAIGN + _INHERIT)


if __name__ == "__main__":  # pragma: no cover
    print(signals_markdown(), end="")
