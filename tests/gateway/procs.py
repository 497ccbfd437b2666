"""Real processes for the gateway tests: the mock upstream, ``distillguard serve`` and Redis, each
on a free port; a small HTTP client (the standard library's, so that what the tests see is what
any client sees on the wire); and the waits and disk fillers the fault tests share."""

from __future__ import annotations

import errno
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import psutil
import pytest
import yaml

from distillguard.gateway.ports import free_port, wait_port
from distillguard.store import Store


def start_upstream(latency_ms: float = 0.0, chunk_delay_ms: float = 5.0) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "distillguard.gateway.mock_upstream", "--port", str(port),
                             "--latency-ms", str(latency_ms), "--chunk-delay-ms", str(chunk_delay_ms)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_port(port, proc)
    return proc, port


@contextmanager
def mock_upstream(latency_ms: float = 0.0, chunk_delay_ms: float = 5.0) -> Iterator[int]:
    """The port of a mock upstream LLM that is stopped on leaving the block."""
    proc, port = start_upstream(latency_ms, chunk_delay_ms)
    try:
        yield port
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen) -> None:
    """Kill ``proc`` unless it has exited already, and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@dataclass
class Gateway:
    proc: subprocess.Popen
    port: int
    db: Path
    log_path: Path
    settings: dict[str, Any] = field(default_factory=dict)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def start_gateway(tmp: Path, upstream_port: int, keys: list[dict[str, Any]] | None = None,
                  policy: dict[str, Any] | None = None, name: str = "gw", preexec=None,
                  args: tuple[str, ...] = (), env: dict[str, str] | None = None, **settings: Any) -> Gateway:
    """``distillguard serve`` with a config file holding ``settings`` (GatewayConfig fields),
    further command-line ``args`` and environment ``env``."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {"upstream": f"http://127.0.0.1:{upstream_port}", "db": str(tmp / f"{name}.duckdb"),
              "reload_every_seconds": 0.2, "load_every_seconds": 0.5, "segment_seconds": 1.0} | settings
    if keys is not None:
        (tmp / f"{name}-keys.yaml").write_text(yaml.safe_dump(keys))
        config["keys"] = str(tmp / f"{name}-keys.yaml")
    if policy is not None:
        (tmp / f"{name}-policy.yaml").write_text(yaml.safe_dump(policy))
        config["policy"] = str(tmp / f"{name}-policy.yaml")
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(config))
    log_path = tmp / f"{name}.log"
    env = os.environ | {"DISTILLGUARD_ADMIN_TOKEN": ""} | (env or {})
    for _attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "distillguard.cli", "serve", "--config",
                                 str(tmp / f"{name}.yaml"), "--port", str(port), *args], stdout=log_path.open("wb"),
                                stderr=subprocess.STDOUT, env=env, preexec_fn=preexec)
        if _owns_port(proc, port):
            wait_port(port, proc)
            return Gateway(proc, port, Path(config["db"]), log_path, config)
        # another test's process took the port between free_port and the gateway's bind: a new port
        port = free_port()
    raise RuntimeError(f"the gateway could not listen on a free port in 3 attempts: {log_path.read_text()[-2000:]}")


def _owns_port(proc: subprocess.Popen, port: int, timeout: float = 30.0) -> bool:
    """Whether ``proc`` itself listens on ``port`` (True), or exits first because it cannot bind it
    (False). wait_port alone would take another process listening there for the gateway: under
    parallel tests a port free a moment ago can be another test's by the time the gateway binds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            conns = psutil.Process(proc.pid).net_connections(kind="tcp")
        except psutil.Error:
            conns = []
        if any(c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in conns):
            return True
        time.sleep(0.05)
    raise TimeoutError(f"the gateway does not listen on {port} after {timeout} s")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    chunk_times: list[float] = field(default_factory=list)  # seconds after the request, per chunk read

    def json(self) -> Any:
        return json.loads(self.body)


def call(port: int, path: str, body: Any = None, key: str | None = "sk-alice", method: str = "POST",
         headers: dict[str, str] | None = None, timeout: float = 30.0) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    sent = {"Content-Type": "application/json"} | (headers or {})
    if key:
        sent["Authorization"] = f"Bearer {key}"
    payload = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    t0 = time.perf_counter()
    conn.request(method, path, body=payload, headers=sent)
    response = conn.getresponse()
    chunks, times = [], []
    while True:
        chunk = response.read1(65536)
        if not chunk:
            break
        chunks.append(chunk)
        times.append(time.perf_counter() - t0)
    conn.close()
    return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, b"".join(chunks), times)


def chat(prompt: str, model: str = "m-large", stream: bool = False, system: str | None = None) -> dict[str, Any]:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    body: dict[str, Any] = {"model": model, "messages": messages}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


#: why a test that needs a real Redis is skipped on a machine without one
NO_REDIS = "redis-server not installed (.ci/run)"


def start_redis(tmp: Path, port: int | None = None) -> tuple[subprocess.Popen, int]:
    """A real redis-server (installed by .ci/run), without persistence, on a free port or on
    ``port`` (to restart one that a test killed where the gateway expects it). Without
    redis-server the calling test is skipped, saying so."""
    if shutil.which("redis-server") is None:
        pytest.skip(NO_REDIS)
    port = port or free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    wait_port(port, proc)
    return proc, port


def admin_call(port: int, method: str, path: str, body: Any = None, token: str | None = None) -> Reply:
    """A request to the admin API, with ``token`` as its bearer token (none: no Authorization)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return call(port, path, body, key=None, method=method, headers=headers)


T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout: float = 15.0, what: str = "the condition",
               every: float = 0.1) -> T:
    """Call ``check`` every ``every`` seconds until it returns something true, and return that;
    fail the test with ``what`` once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(every)


def stored(db: Path, sql: str) -> list[tuple]:
    """The rows ``sql`` selects from the store at ``db``, opened read-only (the gateway that
    writes it stopped, or between its loader's rounds)."""
    with Store(db, read_only=True) as store:
        return store.con.execute(sql).fetchall()


def live_processes(parent: int | None = None, group: int | None = None) -> list[int]:
    """The pids of the live (not zombie) processes whose parent is ``parent`` or whose process
    group is ``group``, as /proc tells them."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
            state, ppid, pgrp = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:  # the process ended while we read
            continue
        if state != "Z" and (int(ppid) == parent or int(pgrp) == group):
            found.append(int(entry.name))
    return found


def fill_disk(directory: Path) -> Path:
    """Write zeros to a file in ``directory`` until its file system is full (ENOSPC); the file,
    which the test unlinks to free the space again."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as full:
        if full.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return filler
