"""User-Agent strings by client family.

A scenario weights families per persona or campaign; each account then uses one concrete
string (newer versions likelier), as a real installation would. SDK defaults are common
among *legitimate* developers too, so the family alone separates nobody.
"""

from __future__ import annotations

import numpy as np


def _versions(template: str, versions: list[str]) -> tuple[str, ...]:
    return tuple(template.format(v=v) for v in versions)


_CHROME = "Mozilla/5.0 ({os}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{v}.0.0.0 Safari/537.36"

USER_AGENT_FAMILIES: dict[str, tuple[str, ...]] = {
    "openai_python": _versions("OpenAI/Python {v}", [f"1.{m}.{p}" for m in range(30, 84, 3) for p in (0, 2)]),
    "openai_python_async": _versions("AsyncOpenAI/Python {v}", [f"1.{m}.0" for m in range(35, 84, 4)]),
    "openai_node": _versions("OpenAI/JS {v}", [f"4.{m}.{p}" for m in range(50, 92, 3) for p in (0, 1)]),
    "anthropic_python": _versions("Anthropic/Python {v}", [f"0.{m}.0" for m in range(30, 56, 2)]),
    "anthropic_node": _versions("Anthropic/JS {v}", [f"0.{m}.0" for m in range(24, 52, 3)]),
    "httpx": _versions("python-httpx/{v}", ["0.25.2", "0.26.0", "0.27.0", "0.27.2", "0.28.1"]),
    "requests": _versions("python-requests/{v}", ["2.28.2", "2.31.0", "2.32.2", "2.32.3", "2.32.4"]),
    "aiohttp": _versions("Python/3.{v}", ["10 aiohttp/3.9.1", "11 aiohttp/3.9.5", "12 aiohttp/3.10.10",
                                          "12 aiohttp/3.11.11", "13 aiohttp/3.12.2"]),
    "node": ("node-fetch/1.0 (+https://github.com/bitinn/node-fetch)", "undici", "node",
             "axios/1.6.8", "axios/1.7.7", "axios/1.8.4"),
    "curl": _versions("curl/{v}", ["7.68.0", "7.81.0", "8.4.0", "8.5.0", "8.7.1", "8.11.1"]),
    "go": ("Go-http-client/1.1", "Go-http-client/2.0"),
    "java": ("okhttp/4.10.0", "okhttp/4.12.0", "Apache-HttpClient/5.2.1 (Java/17.0.9)",
             "Java-http-client/17.0.9", "Java-http-client/21.0.3"),
    "dotnet": ("Microsoft.Extensions.AI/9.0", "OpenAI/2.1.0 (.NET 8.0.8; Microsoft Windows 10.0.22631)"),
    "browser": tuple(
        _CHROME.format(os=os_, v=v)
        for os_ in ("Windows NT 10.0; Win64; x64", "Macintosh; Intel Mac OS X 10_15_7", "X11; Linux x86_64")
        for v in (122, 124, 126, 128, 131, 134)
    ) + (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/17.4 Safari/605.1.15",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
        "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    ),
    "mobile_app": (
        "PalChat/1.9.3 CFNetwork/1494.0.7 Darwin/23.4.0", "PalChat/2.0.1 CFNetwork/1496.0.7 Darwin/23.5.0",
        "Chatbox/1.9.8 (iPhone; iOS 17.5.1; Scale/3.00)", "Chatbox/1.10.2 (iPhone; iOS 18.0; Scale/3.00)",
        "okhttp/4.9.3", "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/AP1A.240405.002)",
        "Dalvik/2.1.0 (Linux; U; Android 14; SM-S918B Build/UP1A.231005.007)",
        "Dalvik/2.1.0 (Linux; U; Android 13; M2101K6G Build/TKQ1.221013.002)",
    ),
    "desktop_app": ("Chatbox/1.4.2 Electron/28.2.0", "Chatbox/1.9.1 Electron/31.1.0",
                    "Msty/1.2.0 Electron/30.0.1", "BoltAI/1.28 (Macintosh; macOS 14.5)",
                    "TypingMind/2024.05 Electron/29.3.0"),
    "coding_agent": (
        "claude-cli/1.0.31 (external, cli)", "claude-cli/1.0.44 (external, cli)",
        "claude-cli/1.0.58 (external, cli)", "Cline/3.12.0", "Cline/3.17.4", "Roo-Code/3.19.1",
        "aider/0.82.1", "aider/0.84.0", "Zed/0.188.3", "continue/1.0.12", "opencode/0.3.110",
        "Cursor/0.50.7", "Kilo-Code/4.40.0",
    ),
    "framework": ("langchain-python/0.3.25", "litellm/1.67.0", "llama-index/0.12.38",
                  "semantic-kernel/1.32.0", "crewai/0.121.0", "haystack/2.13.2"),
}

FAMILY_NAMES: tuple[str, ...] = tuple(USER_AGENT_FAMILIES)


def catalogue() -> tuple[list[str], np.ndarray, np.ndarray]:
    """All strings, the first index of each family, and each family's size (in FAMILY_NAMES order)."""
    strings: list[str] = []
    starts, sizes = [], []
    for name in FAMILY_NAMES:
        starts.append(len(strings))
        sizes.append(len(USER_AGENT_FAMILIES[name]))
        strings.extend(USER_AGENT_FAMILIES[name])
    return strings, np.array(starts, dtype=np.int64), np.array(sizes, dtype=np.int64)
