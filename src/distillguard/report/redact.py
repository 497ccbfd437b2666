"""Redaction for reports that leave the building: prompt text and personal data become stable hashes.

A report shared with another provider or an authority must show *that* two accounts sent the
same prompt or used the same e-mail address without showing the prompt or the address. So
each redacted value becomes a short hash of itself: equal values stay equal across the
report (and across reports made with the same salt), different values stay different, and
the text is gone. Without a salt a short value (an e-mail address, a phone number) can be
recovered by hashing guesses; set ``DISTILLGUARD_REDACT_SALT`` (or ``--redact-salt``) to a
secret when the report leaves your hands, and keep it to compare later reports.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
#: API keys and bearer secrets: vendor prefixes, JWTs, and long random-looking tokens
_KEYS = re.compile(
    r"(?:\b(?:sk|pk|rk)-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_\-]{16,}"       # OpenAI/Anthropic-style sk-..., sk-ant-...
    r"|\bAKIA[0-9A-Z]{16}\b"                                       # AWS access key id
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"                               # GitHub tokens
    r"|\bxox[abprs]-[A-Za-z0-9\-]{10,}"                            # Slack tokens
    r"|\bAIza[0-9A-Za-z_\-]{30,}"                                  # Google API keys
    r"|\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"  # JWTs
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/\-]{16,}=*"                   # Authorization: Bearer ...
    r"|\b(?=[A-Za-z0-9_\-]*[0-9])(?=[A-Za-z0-9_\-]*[A-Za-z])[A-Za-z0-9_\-]{32,})"  # any long mixed token
)
#: phone numbers: E.164, or 9 to 15 digits in groups separated by spaces or dashes (dots would
#: also take IP addresses and version numbers)
_PHONE = re.compile(r"(?<![\w.:\-])(?:\+\d[\d\s\-()]{7,18}\d|\(?\d{2,4}\)?(?:[\s\-]\(?\d{2,5}\)?){2,4})(?![\w.:])")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _digits(text: str) -> int:
    return sum(ch.isdigit() for ch in text)


@dataclass(frozen=True)
class Redactor:
    """Replaces prompt text and personal data with ``[kind:hash]`` tokens; off when not ``enabled``."""

    enabled: bool = True
    salt: str = ""

    def token(self, kind: str, value: str) -> str:
        digest = hashlib.sha256((self.salt + "\x00" + kind + "\x00" + value).encode("utf-8", "surrogatepass"))
        return f"[{kind}:{digest.hexdigest()[:12]}]"

    def text(self, value: str | None, kind: str = "prompt") -> str | None:
        """A whole free text (a prompt) replaced by one token carrying its length."""
        if not self.enabled or value is None:
            return value
        return f"{self.token(kind, value)[:-1]} {len(value):,} chars]"

    def scrub(self, value: str | None) -> str | None:
        """Personal data inside a short string (a user agent, a reason) replaced by tokens."""
        if not self.enabled or value is None:
            return value
        out = _EMAIL.sub(lambda m: self.token("email", m.group(0)), value)
        out = _KEYS.sub(lambda m: self.token("key", m.group(0)), out)
        return _PHONE.sub(lambda m: self.token("phone", m.group(0))
                          if 9 <= _digits(m.group(0)) <= 15 and not _DATE.match(m.group(0)) else m.group(0), out)


NONE = Redactor(enabled=False)
