"""Real processes for the gateway tests: the mock upstream and ``distillguard serve``, each on
a free port, and a small HTTP client (the standard library's, so that what the tests see is
what any client sees on the wire)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distillguard.gateway.ports import free_port, wait_port


def start_upstream(latency_ms: float = 0.0, chunk_delay_ms: float = 5.0) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "distillguard.gateway.mock_upstream", "--port", str(port),
                             "--latency-ms", str(latency_ms), "--chunk-delay-ms", str(chunk_delay_ms)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_port(port, proc)
    return proc, port


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
    proc = subprocess.Popen([sys.executable, "-m", "distillguard.cli", "serve", "--config", str(tmp / f"{name}.yaml"),
                             "--port", str(port), *args], stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env=env,
                            preexec_fn=preexec)
    wait_port(port, proc)
    return Gateway(proc, port, Path(config["db"]), log_path, config)


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


def start_redis(tmp: Path) -> tuple[subprocess.Popen, int]:
    """A real redis-server (installed by .ci/run), without persistence, on a free port."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    wait_port(port, proc)
    return proc, port
