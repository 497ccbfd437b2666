"""Redaction of prompt text and personal data: properties over generated text."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from distillguard.report.redact import Redactor

R = Redactor(salt="s")
words = st.text(alphabet=string.ascii_letters + " ,;:!?", min_size=0, max_size=40)
emails = st.builds(lambda user, host, tld: f"{user}@{host}.{tld}",
                   st.text(alphabet=string.ascii_lowercase + string.digits + "._+-", min_size=1, max_size=20)
                   .filter(lambda u: u[0].isalnum()),
                   st.text(alphabet=string.ascii_lowercase + string.digits + "-", min_size=1, max_size=15)
                   .filter(lambda h: h[0].isalnum()),
                   st.sampled_from(["com", "org", "co.uk", "io", "de"]))
keys = st.one_of(
    st.builds(lambda body: "sk-" + body, st.text(alphabet=string.ascii_letters + string.digits, min_size=20, max_size=48)),
    st.builds(lambda body: "sk-ant-api03-" + body, st.text(alphabet=string.ascii_letters + string.digits + "_-",
                                                           min_size=20, max_size=60)),
    st.builds(lambda body: "AKIA" + body, st.text(alphabet=string.ascii_uppercase + string.digits, min_size=16, max_size=16)),
    st.builds(lambda body: "ghp_" + body, st.text(alphabet=string.ascii_letters + string.digits, min_size=36, max_size=36)),
)
phones = st.one_of(
    st.builds(lambda cc, n: f"+{cc} {n[:3]} {n[3:6]} {n[6:]}", st.integers(1, 99),
              st.text(alphabet=string.digits, min_size=10, max_size=10)),
    st.builds(lambda n: f"({n[:3]}) {n[3:6]}-{n[6:]}", st.text(alphabet=string.digits, min_size=10, max_size=10)),
    st.builds(lambda n: f"+{n}", st.text(alphabet=string.digits, min_size=11, max_size=14)),
)


@settings(max_examples=300)
@given(words, st.one_of(emails, keys, phones), words)
def test_personal_data_never_survives_scrubbing(before, secret, after):
    text = f"{before} {secret} {after}"
    scrubbed = R.scrub(text)
    assert secret not in scrubbed
    assert scrubbed == R.scrub(text)  # stable: the same text, the same tokens


@given(st.one_of(emails, keys))
def test_equal_values_give_equal_tokens_and_the_salt_changes_them(secret):
    assert R.scrub(f"a {secret} b").split()[1] == R.scrub(f"c {secret} d").split()[1]
    assert Redactor(salt="other").scrub(secret) != R.scrub(secret)


@given(st.text(max_size=300))
def test_a_redacted_prompt_keeps_only_its_hash_and_length(prompt):
    token = R.text(prompt)
    assert token.startswith("[prompt:") and f"{len(prompt):,} chars]" in token
    if len(prompt) > 3:
        assert prompt not in token
    assert R.text(prompt) == token and R.text(prompt + "x") != token


def test_ordinary_user_agents_and_addresses_are_left_alone():
    # versions, addresses, ids and short numbers are not personal data
    for sample in ("python-httpx/0.28.1", "OpenAI/Python 1.63.2", "10.1.2.3", "Mozilla/5.0 (X11; Linux x86_64)",
                   "acct_0021b978169d64ae", "pm_be42d7e125bd3f18", "2026-04-22 10:00:00", "order 12345"):
        assert R.scrub(sample) == sample


def test_disabled_redaction_changes_nothing():
    off = Redactor(enabled=False)
    assert off.scrub("mail me: bob@example.com") == "mail me: bob@example.com"
    assert off.text("a prompt") == "a prompt"
