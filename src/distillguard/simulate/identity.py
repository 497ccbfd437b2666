"""Sign-up e-mail domains.

Scenario weights name literal domains or classes ('@free', '@regional', '@group', '@custom',
'@disposable'); this module turns a class into a concrete domain for each account.
"""

from __future__ import annotations

import numpy as np

from distillguard.simulate.keys import below, mix

FREE_MAIL: tuple[str, ...] = ("gmail.com", "gmail.com", "gmail.com", "gmail.com", "outlook.com",
                              "hotmail.com", "yahoo.com", "icloud.com", "proton.me", "aol.com")

REGIONAL_MAIL: dict[str, tuple[str, ...]] = {
    "us": ("gmail.com", "comcast.net", "att.net", "verizon.net", "yahoo.com"),
    "ca": ("gmail.com", "shaw.ca", "rogers.com", "sympatico.ca"),
    "uk": ("gmail.com", "btinternet.com", "yahoo.co.uk", "sky.com", "hotmail.co.uk"),
    "de": ("gmail.com", "gmx.de", "web.de", "t-online.de", "posteo.de"),
    "fr": ("gmail.com", "orange.fr", "free.fr", "laposte.net", "sfr.fr"),
    "in": ("gmail.com", "rediffmail.com", "yahoo.co.in"),
    "jp": ("gmail.com", "yahoo.co.jp", "docomo.ne.jp", "icloud.com"),
    "kr": ("gmail.com", "naver.com", "daum.net", "kakao.com"),
    "br": ("gmail.com", "uol.com.br", "bol.com.br", "hotmail.com"),
    "au": ("gmail.com", "bigpond.com", "outlook.com.au", "optusnet.com.au"),
    "sg": ("gmail.com", "singnet.com.sg", "yahoo.com.sg"),
}

DISPOSABLE_MAIL: tuple[str, ...] = ("mailinator.com", "guerrillamail.com", "10minutemail.com",
                                    "temp-mail.org", "sharklasers.com", "yopmail.com", "maildrop.cc",
                                    "dispostable.com", "tempmail.dev", "mail.tm")

_WORDS = ("north", "lumen", "byte", "quill", "maple", "orbit", "cedar", "pixel", "harbor", "ember",
          "delta", "nimbus", "atlas", "fable", "kite", "vector", "sparrow", "cobalt", "juniper", "onyx",
          "tidal", "aurora", "granite", "willow", "ferro", "zenith", "prairie", "lattice", "meadow", "rune")
_TLDS = ("com", "dev", "io", "net", "me", "org", "xyz", "ai", "co", "app", "tech", "top")


def custom_domains(keys: np.ndarray) -> list[str]:
    """A plausible personal or small-business domain per key (same key, same domain)."""
    a = below(mix(keys, 11), len(_WORDS))
    b = below(mix(keys, 12), len(_WORDS))
    tld = below(mix(keys, 13), len(_TLDS))
    n = below(mix(keys, 14), 100)
    style = below(mix(keys, 15), 3)
    out = []
    for i in range(len(keys)):
        stem = (_WORDS[a[i]] + _WORDS[b[i]] if style[i] == 0
                else f"{_WORDS[a[i]]}-{_WORDS[b[i]]}" if style[i] == 1
                else f"{_WORDS[a[i]]}{n[i]}")
        out.append(f"{stem}.{_TLDS[tld[i]]}")
    return out
