"""Headless Chromium: the PDF of an HTML report, and screenshots of it for the tests.

A real browser renders the report, so the PDF is what the reader of the HTML sees, charts
included. Debian's ``chromium`` package (``apt-get install chromium``; .ci/run installs it) is
found on the PATH, or wherever ``DISTILLGUARD_CHROMIUM`` points.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from distillguard.errors import UserError

_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find() -> str | None:
    """The Chromium binary to use, or None."""
    given = os.environ.get("DISTILLGUARD_CHROMIUM")
    if given:
        return given if Path(given).exists() else shutil.which(given)
    for name in _NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _chromium(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run headless Chromium with ``args`` in a throwaway profile."""
    binary = find()
    if binary is None:
        raise UserError("this needs headless Chromium: install Debian's chromium package "
                        "(apt-get install chromium) or set DISTILLGUARD_CHROMIUM to the browser's path")
    with tempfile.TemporaryDirectory(prefix="distillguard-chromium-") as profile:
        # --no-sandbox: the sandbox needs user namespaces, which containers and root lack; the
        # page is our own file, with a policy that forbids scripts and network
        command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                   "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}", *args]
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise UserError(f"Chromium did not finish within {timeout:g} s") from None


def _run(args: list[str], target: Path, timeout: float) -> None:
    done = _chromium(args, timeout)
    if done.returncode != 0 or not target.exists() or target.stat().st_size == 0:
        tail = (done.stderr or "").strip().splitlines()[-3:]
        raise UserError(f"Chromium failed to write {target} (exit {done.returncode}): {' / '.join(tail)}")


def pdf(html: Path, target: Path, timeout: float = 180) -> Path:
    """Print ``html`` to ``target`` as PDF (A4, backgrounds, no browser header or footer)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    _run(["--no-pdf-header-footer", "--print-to-pdf-no-header", f"--print-to-pdf={target.resolve()}",
          html.resolve().as_uri()], target, timeout)
    return target


def screenshot(html: Path, target: Path, width: int = 1200, height: int = 2400, timeout: float = 120) -> Path:
    """A PNG of the top ``height`` pixels of ``html`` rendered ``width`` pixels wide."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    _run(["--hide-scrollbars", f"--window-size={width},{height}", f"--screenshot={target.resolve()}",
          html.resolve().as_uri()], target, timeout)
    return target


def dump_dom(html: Path, timeout: float = 120) -> str:
    """The page's DOM after Chromium has loaded it (and run whatever script it would run)."""
    done = _chromium(["--dump-dom", html.resolve().as_uri()], timeout)
    if done.returncode != 0:
        raise UserError(f"Chromium failed to load {html} (exit {done.returncode})")
    return done.stdout
