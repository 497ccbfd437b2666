"""Gateway benchmark: added latency and throughput of ``distillguard serve`` against calling the
mock upstream directly, and against the LiteLLM proxy in front of the same mock; then a load
test of streams, counting the log rows in the store afterwards.

Run with ``make bench`` (or ``python benchmarks/gateway.py --out bench-out/gateway``). Every
target is measured in the same run, one after the other, by the same load generator (a
separate process: aiohttp, a fixed number of requests in flight, each on its own key among
1,000 accounts), so the figures are comparable. Added latency is a percentile of the
target's latency minus the same percentile of the direct calls. The Markdown result
replaces the gateway section of docs/benchmarks.md.

``--live`` measures live routing's cost instead: it simulates a small scenario, scans it and
calibrates live routing's reference (benchmarks/live_routing.py, ``build_reference``), then runs
two gateways on the same settings, one with ``--live-reference`` and one without, and sends each
latency row's requests in turn to the mock directly, the gateway without and the gateway with
live routing, so all three see the same load at the same moments. The benchmark's keys are all
at allow, so live routing scores every request the second gateway serves. The load test then
streams through the gateway with live routing. Its Markdown replaces the gateway-live section.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from distillguard.bench.report import write_docs
from distillguard.gateway.ports import free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
ACCOUNTS = 1000


# --- the load generator (runs in its own process) ------------------------------------------------

async def _load(url: str, keys: list[str], requests: int, concurrency: int, stream: bool, warmup: int,
                model: str, stagger_ms: float = 0.0) -> dict:
    import aiohttp

    body = {"model": model, "messages": [{"role": "user", "content": "Write a haiku about latency budgets."}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    payload = json.dumps(body).encode()
    # "A|B": requests alternate between two targets, so that both are measured side by side,
    # under the same load on the same cores at the same moments
    urls = url.split("|")
    latencies = {u: [] for u in urls}
    ttfbs = {u: [] for u in urls}
    statuses = {u: {} for u in urls}
    errors = {u: 0 for u in urls}
    counter = iter(range(requests + warmup))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        async def worker(k: int) -> None:
            nonlocal errors
            # clients arrive spread over one upstream latency, not all in the same instant (in
            # lockstep every round would be a burst of `concurrency` requests, and the figures
            # would measure the burst's queue, not the proxy)
            await asyncio.sleep(stagger_ms / 1000 * k / concurrency)
            for i in counter:
                target = urls[i % len(urls)]
                headers = {"Authorization": f"Bearer {keys[i % len(keys)]}", "Content-Type": "application/json"}
                t0 = time.perf_counter()
                try:
                    async with session.post(target, data=payload, headers=headers) as response:
                        first = None
                        async for _ in response.content.iter_any():
                            if first is None:
                                first = time.perf_counter()
                        done = time.perf_counter()
                        statuses[target][response.status] = statuses[target].get(response.status, 0) + 1
                        if response.status != 200:
                            errors[target] += 1
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    errors[target] += 1
                    continue
                if i >= warmup:
                    latencies[target].append(done - t0)
                    ttfbs[target].append((first or done) - t0)

        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        wall = time.perf_counter() - started
    return {u: {"latencies_ms": [x * 1000 for x in latencies[u]], "ttfb_ms": [x * 1000 for x in ttfbs[u]],
                "errors": errors[u], "statuses": statuses[u], "wall_seconds": wall,
                "requests": sum(statuses[u].values()) + errors[u]} for u in urls}


def _load_main(args: argparse.Namespace) -> None:
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    keys = json.loads(Path(args.keys_json).read_text())
    # the load generator's own collector passes (tens of milliseconds over aiohttp's objects)
    # would land in the latencies of every target alike and drown the proxy's tail in the
    # instrument's; one run's garbage fits in memory
    gc.collect()
    gc.freeze()
    gc.disable()
    result = asyncio.run(_load(args.url, keys, args.requests, args.concurrency, args.stream, args.warmup,
                               args.model, args.stagger_ms))
    Path(args.result).write_text(json.dumps(result))


# --- orchestration --------------------------------------------------------------------------------

def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


def _cpus(spec: str) -> set[int]:
    """CPU numbers from "1" or "0,2-3"; empty: none."""
    cpus: set[int] = set()
    for part in filter(None, spec.split(",")):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def _pinned(cpus: set[int]):
    """A preexec_fn that pins the child to ``cpus`` (None when there is nothing to pin)."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run_load(url: str, keys_json: Path, requests: int, concurrency: int, stream: bool, work: Path,
              warmup: int, model: str = "m-large", stagger_ms: float = 0.0, pid: int | None = None,
              cpus: set[int] | None = None) -> dict:
    """Figures per target of one load run (``url``: one target, or "A|B" side by side)."""
    out = work / f"load-{time.monotonic_ns()}.json"
    cpu = _cpu_seconds(pid)
    subprocess.run([sys.executable, __file__, "--load", "--url", url, "--keys-json", str(keys_json),
                    "--requests", str(requests), "--concurrency", str(concurrency), "--result", str(out),
                    "--warmup", str(warmup), "--model", model, "--stagger-ms", str(stagger_ms)]
                   + (["--stream"] if stream else []), check=True, preexec_fn=_pinned(cpus or set()))
    cpu = _cpu_seconds(pid) - cpu
    figures = {}
    for target, r in json.loads(out.read_text()).items():
        lat, ttfb = r["latencies_ms"], r["ttfb_ms"]
        figures[target] = {
            "p50_ms": _pct(lat, 50), "p99_ms": _pct(lat, 99), "ttfb_p50_ms": _pct(ttfb, 50),
            "ttfb_p99_ms": _pct(ttfb, 99), "rps": r["requests"] / r["wall_seconds"], "errors": r["errors"],
            "statuses": r["statuses"], "requests": r["requests"]}
    if pid is not None:  # one target, the proxy: its CPU over the requests it served in this run
        served = sum(f["requests"] for f in figures.values())
        for t in figures:
            figures[t]["proxy_cpu_ms_per_request"] = 1000 * cpu / max(served, 1)
    return figures


def _litellm_proxy(litellm: str, upstream_port: int, work: Path, keys: list[str],
                   cpus: set[int]) -> tuple[subprocess.Popen, int]:
    """The LiteLLM proxy in front of the mock, with a per-key requests-per-minute limit, its
    keys known through custom auth (LiteLLM's own key table needs a Postgres database)."""
    port = free_port()
    (work / "litellm_auth.py").write_text(
        "from litellm.proxy._types import UserAPIKeyAuth\n"
        f"KEYS = set({keys!r})\n"
        "async def user_api_key_auth(request, api_key):\n"
        "    if api_key not in KEYS:\n"
        "        raise Exception('invalid key')\n"
        "    return UserAPIKeyAuth(api_key=api_key, user_id=api_key, rpm_limit=100000, tpm_limit=100000000)\n")
    (work / "litellm.yaml").write_text(
        "model_list:\n" + "".join(
            f"  - model_name: {m}\n"
            "    litellm_params:\n"
            f"      model: openai/{m}\n"
            f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
            "      api_key: upstream-key\n" for m in ("m-large", "m-fast")) +
        "general_settings:\n"
        "  custom_auth: litellm_auth.user_api_key_auth\n"
        "  master_key: sk-bench-master-key-0123456789abcdef0123456789\n"
        "litellm_settings:\n"
        "  callbacks: []\n"
        "  drop_params: true\n")
    env = os.environ | {"LITELLM_LOG": "ERROR", "PYTHONPATH": str(work), "LITELLM_MODE": "PRODUCTION",
                        "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.Popen([str(Path(litellm).resolve()), "--config", str(work / "litellm.yaml"), "--port", str(port),
                             "--num_workers", "1"], cwd=work, env=env, stdout=(work / "litellm.log").open("wb"),
                            stderr=subprocess.STDOUT, preexec_fn=_pinned(cpus))
    wait_port(port, proc, timeout=120)
    return proc, port


def _serve(up_port: int, work: Path, name: str, cpus: set[int], *extra: str) -> tuple[subprocess.Popen, int, int, Path]:
    """``distillguard serve`` in front of the mock with the benchmark's keys and policy, its admin
    listener (/metrics, unauthenticated there) on a port of its own: (process, port, admin port, store)."""
    port, admin_port = free_port(), free_port()
    db = work / f"{name}.duckdb"
    proc = subprocess.Popen([sys.executable, "-m", "distillguard.cli", "serve", "--upstream",
                             f"http://127.0.0.1:{up_port}", "--port", str(port), "--keys", str(work / "keys.csv"),
                             "--db", str(db), "--policy", str(work / "policy.yaml"), "--admin-port", str(admin_port),
                             *extra], stdout=(work / f"{name}.log").open("wb"), stderr=subprocess.STDOUT,
                            preexec_fn=_pinned(cpus))
    wait_port(port, proc)
    return proc, port, admin_port, db


def _counters(admin_port: int) -> dict[str, float]:
    """The gateway's Prometheus counters (unlabelled ones), by name."""
    from urllib.request import urlopen

    with urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=30) as response:
        text = response.read().decode()
    return {name: float(value) for name, _, value in
            (line.partition(" ") for line in text.splitlines() if line and not line.startswith("#"))
            if "{" not in name}


def _stored(db: Path) -> int:
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT count(*) FROM exchanges").fetchone()[0]


def _live(args: argparse.Namespace, up_port: int, work: Path, keys_json: Path, procs: list[subprocess.Popen],
          proxy_cpus: set[int], other_cpus: set[int]) -> dict:
    """Live routing on and off side by side (module docstring, ``--live``): the figures of the run."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from live_routing import build_reference

    from distillguard.detect.policy import load_policy

    print(f"gateway bench: live reference from {args.live_scenario} at scale {args.live_scale}", flush=True)
    prepared = build_reference(work / "live", load_policy(str(work / "policy.yaml")), args.live_scenario,
                               args.live_scale)
    prepared.store.close()
    reference = work / "live.json"
    prepared.reference.write(reference)
    fallback = ("--fallback-model", "m-fallback")  # the mock answers it as it answers m-large
    gateways = {"off": _serve(up_port, work, "gateway-off", proxy_cpus, *fallback),
                "on": _serve(up_port, work, "gateway-on", proxy_cpus, *fallback, "--live-reference", str(reference))}
    procs.extend(g[0] for g in gateways.values())
    urls = {"direct": f"http://127.0.0.1:{up_port}/v1/chat/completions",
            **{k: f"http://127.0.0.1:{g[1]}/v1/chat/completions" for k, g in gateways.items()}}
    rows: dict[str, dict] = {}
    for stream in (False, True):
        mode = "stream" if stream else "json"
        rows[mode] = {}
        # one gateway at a time on the pinned CPU, alternating with direct calls, as the standard
        # benchmark runs its one proxy: two gateways loaded at once would halve each one's core
        for k, g in gateways.items():
            print(f"gateway bench: direct and live routing {k} in turn ({mode}), {args.requests} requests each, "
                  f"{args.concurrency} in flight to each", flush=True)
            cpu = _cpu_seconds(g[0].pid)
            run = _run_load(f"{urls['direct']}|{urls[k]}", keys_json, 2 * args.requests, 2 * args.concurrency,
                            stream, work, warmup=400, stagger_ms=args.latency_ms, cpus=other_cpus)
            run[urls[k]]["proxy_cpu_ms_per_request"] = (1000 * (_cpu_seconds(g[0].pid) - cpu)
                                                        / max(run[urls[k]]["requests"], 1))
            rows[mode][k] = run[urls[k]]
            rows[mode][f"direct_{k}"] = run[urls["direct"]]
    scored = _counters(gateways["on"][2])
    print(f"gateway bench: load test through live routing, {args.load_requests} streams at {args.load_concurrency}",
          flush=True)
    load = _run_load(urls["on"], keys_json, args.load_requests, args.load_concurrency, True, work, warmup=0,
                     stagger_ms=args.latency_ms, pid=gateways["on"][0].pid, cpus=other_cpus)[urls["on"]]
    after = _counters(gateways["on"][2])
    for proc, *_ in gateways.values():
        proc.send_signal(signal.SIGTERM)
    lost = {}
    for k, (proc, _, _, db) in gateways.items():
        proc.wait(timeout=300)
        answered = sum(sum(r[k]["statuses"].values()) for r in rows.values())
        answered += sum(load["statuses"].values()) if k == "on" else 0
        lost[k] = {"answered": answered, "stored_rows": _stored(db)}
    return {"rows": rows, "load_test": load, "lost": lost,
            "live": {"looks_in_rows": scored.get("distillguard_live_looks_total", 0.0),
                     "looks": after.get("distillguard_live_looks_total", 0.0),
                     "routed": after.get("distillguard_live_routed_total", 0.0),
                     "sessions_routed": after.get("distillguard_live_sessions_routed_total", 0.0)},
            "reference": {"scenario": args.live_scenario, "scale": args.live_scale,
                          "sessions": prepared.reference.sessions, "accounts": prepared.reference.accounts}}


def _standard(args: argparse.Namespace, up_port: int, work: Path, keys: list[str], keys_json: Path,
              procs: list[subprocess.Popen], proxy_cpus: set[int], other_cpus: set[int]) -> tuple[dict, dict]:
    """The gateway (and LiteLLM) beside direct calls, throughput, the load test: (rows by target, load test)."""
    results: dict[str, dict] = {}
    gw_port = free_port()
    db = work / "gw.duckdb"
    gw = subprocess.Popen([sys.executable, "-m", "distillguard.cli", "serve", "--upstream",
                           f"http://127.0.0.1:{up_port}", "--port", str(gw_port), "--keys", str(work / "keys.csv"),
                           "--db", str(db), "--policy", str(work / "policy.yaml")], stdout=(work / "gateway.log").open("wb"), stderr=subprocess.STDOUT,
                          preexec_fn=_pinned(proxy_cpus))
    procs.append(gw)
    wait_port(gw_port, gw)
    targets = {"direct": (f"http://127.0.0.1:{up_port}", None),
               "distillguard": (f"http://127.0.0.1:{gw_port}", gw.pid)}
    if args.litellm:
        ll, ll_port = _litellm_proxy(args.litellm, up_port, work, keys, proxy_cpus)
        procs.append(ll)
        targets["litellm"] = (f"http://127.0.0.1:{ll_port}", ll.pid)
    direct = targets.pop("direct")[0] + "/v1/chat/completions"
    for name, (base, pid) in targets.items():
        for stream in (False, True):
            mode = "stream" if stream else "json"
            print(f"gateway bench: {name} and direct side by side ({mode}), {args.requests} requests each, "
                  f"{args.concurrency} in flight to each", flush=True)
            pair = _run_load(f"{direct}|{base}/v1/chat/completions", keys_json, 2 * args.requests,
                             2 * args.concurrency, stream, work, warmup=400, stagger_ms=args.latency_ms,
                             cpus=other_cpus)
            results[f"{name} {mode}"] = pair[f"{base}/v1/chat/completions"]
            results[f"{name} {mode}"]["direct"] = pair[direct]
    for name, (base, pid) in {"direct": (direct.removesuffix("/v1/chat/completions"), None), **targets}.items():
        label = f"{name} throughput"
        print(f"gateway bench: {label}, {args.requests} requests at {args.concurrency} in flight", flush=True)
        results[label] = _run_load(base + "/v1/chat/completions", keys_json, args.requests, args.concurrency,
                                   False, work, warmup=200, model="m-fast", stagger_ms=args.fast_latency_ms,
                                   pid=pid, cpus=other_cpus)[base + "/v1/chat/completions"]
    # the load test: streams through the gateway, then every answered exchange counted in the store
    print(f"gateway bench: load test, {args.load_requests} streams at {args.load_concurrency}", flush=True)
    load_url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
    load = _run_load(load_url, keys_json, args.load_requests, args.load_concurrency, True, work, warmup=0,
                     stagger_ms=args.latency_ms, pid=gw.pid, cpus=other_cpus)[load_url]
    gw.send_signal(signal.SIGTERM)
    gw.wait(timeout=300)
    import duckdb
    with duckdb.connect(str(db), read_only=True) as con:
        con.execute("SET TimeZone='UTC'")
        stored = con.execute("SELECT count(*) FROM exchanges").fetchone()[0]
    # every request answered with a status is an exchange the gateway logs (a refusal too)
    answered_through_gateway = sum(sum(r["statuses"].values()) for k, r in results.items()
                                   if k.startswith("distillguard")) + sum(load["statuses"].values())
    load |= {"stored_rows": stored, "answered_through_gateway": answered_through_gateway}
    return results, load


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench-out/gateway")
    p.add_argument("--docs", default=str(DOC))
    p.add_argument("--requests", type=int, default=4000)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--latency-ms", type=float, default=1000.0,
                   help="the mock upstream's latency for the latency rows (a model's answer takes seconds)")
    p.add_argument("--fast-latency-ms", type=float, default=5.0,
                   help="the mock's latency for the throughput rows, where the proxy's own cost is the limit")
    p.add_argument("--load-requests", type=int, default=10_000)
    p.add_argument("--load-concurrency", type=int, default=500)
    p.add_argument("--proxy-cpus", default="",
                   help="pin the proxies (gateway and its loader, LiteLLM) to these CPUs, e.g. '1', and the load "
                        "generator and the mock to the others, as in a deployment where the proxy has its own "
                        "cores (default: no pinning, everything shares every core)")
    p.add_argument("--litellm", default=shutil.which("litellm", path=str(Path(sys.executable).parent)) or "",
                   help="the litellm executable (default: the one beside this Python; empty: skipped)")
    p.add_argument("--live", action="store_true",
                   help="measure live routing's added latency: a gateway with it and one without, side by side "
                        "(writes the gateway-live section; LiteLLM and the throughput rows are not run)")
    p.add_argument("--live-scenario", default="alibaba-2026", help="the scenario live routing's reference is "
                   "calibrated on (with --live)")
    p.add_argument("--live-scale", type=float, default=0.004, help="its scale (with --live)")
    # load-generator mode
    p.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--keys-json", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, default=200, help=argparse.SUPPRESS)
    p.add_argument("--model", default="m-large", help=argparse.SUPPRESS)
    p.add_argument("--stagger-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.load:
        _load_main(args)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="dg-gw-bench-"))
    keys = [f"sk-bench-{i:05d}" for i in range(ACCOUNTS)]
    keys_json = work / "keys.json"
    keys_json.write_text(json.dumps(keys))
    (work / "keys.csv").write_text("api_key,account_id\n" + "".join(f"{k},acct-{i:05d}\n" for i, k in enumerate(keys)))
    # every limit is checked on every request, as in production, but with ceilings this run never
    # reaches: all its traffic comes from one loopback address, where production sees thousands
    (work / "policy.yaml").write_text("gateway:\n  limits:\n" + "".join(
        f"    - {{scope: {scope}, window_seconds: 60, max_requests: 100000000}}\n"
        for scope in ("account", "subnet", "payment")))
    procs: list[subprocess.Popen] = []
    proxy_cpus = _cpus(args.proxy_cpus)
    other_cpus = (os.sched_getaffinity(0) - proxy_cpus) if proxy_cpus else set()
    if proxy_cpus and not other_cpus:
        p.error(f"--proxy-cpus {args.proxy_cpus} leaves no CPU for the load generator and the mock")
    try:
        up_port = free_port()
        up = subprocess.Popen([sys.executable, "-m", "distillguard.gateway.mock_upstream", "--port", str(up_port),
                               "--latency-ms", str(args.latency_ms), "--chunk-delay-ms", "2",
                               "--fast-model", "m-fast", "--fast-latency-ms", str(args.fast_latency_ms)],
                              preexec_fn=_pinned(other_cpus))
        procs.append(up)
        wait_port(up_port, up)
        if args.live:
            load_before = os.getloadavg()
            live = _live(args, up_port, work, keys_json, procs, proxy_cpus, other_cpus)
            live["load_average"] = {"before": load_before, "after": os.getloadavg()}
        else:
            results, load = _standard(args, up_port, work, keys, keys_json, procs, proxy_cpus, other_cpus)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    summary = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": _machine(),
               "command": "python benchmarks/gateway.py " + shlex.join(sys.argv[1:]), "args": vars(args)}
    name = "gateway-live" if args.live else "gateway"
    if args.live:
        summary |= live
        text = markdown_live(summary)
    else:
        summary |= {"targets": results, "load_test": load}
        text = markdown(summary)
    (out / f"{name}.json").write_text(json.dumps(summary, indent=2))
    (out / f"{name}.md").write_text(text)
    if args.docs:
        write_docs(text, args.docs, name)
    print(text)
    shutil.rmtree(work, ignore_errors=True)


def _machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def markdown(s: dict) -> str:
    t = s["targets"]
    a = s["args"]
    rows = ["| target | mode | p50 ms | p99 ms | TTFB p50 ms | TTFB p99 ms | added p50 ms | added p99 ms | "
            "added TTFB p50 ms | added TTFB p99 ms | errors |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, r in t.items():
        name, mode = label.split()
        if mode == "throughput":
            continue
        base = r["direct"]
        rows.append(f"| direct (beside {name}) | {mode} | {base['p50_ms']:.2f} | {base['p99_ms']:.2f} | "
                    f"{base['ttfb_p50_ms']:.2f} | {base['ttfb_p99_ms']:.2f} | | | | | {base['errors']} |")
        rows.append(f"| {name} | {mode} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['ttfb_p50_ms']:.2f} | "
                    f"{r['ttfb_p99_ms']:.2f} | {r['p50_ms'] - base['p50_ms']:+.2f} | {r['p99_ms'] - base['p99_ms']:+.2f}"
                    f" | {r['ttfb_p50_ms'] - base['ttfb_p50_ms']:+.2f} | {r['ttfb_p99_ms'] - base['ttfb_p99_ms']:+.2f}"
                    f" | {r['errors']} |")
    through = ["| target | req/s | p50 ms | p99 ms | proxy CPU ms per request | errors |", "|---|---|---|---|---|---|"]
    for label, r in t.items():
        if label.endswith("throughput"):
            cpu = r.get("proxy_cpu_ms_per_request")
            through.append(f"| {label.split()[0]} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                           f"{'-' if cpu is None else f'{cpu:.2f}'} | {r['errors']} |")
    ratio = ""
    if "litellm throughput" in t:
        share = t["distillguard throughput"]["rps"] / t["litellm throughput"]["rps"]
        ratio = f" distillguard / LiteLLM throughput: {share:.2f}."
    load = s["load_test"]
    if a.get("proxy_cpus"):
        cores = (f"The proxy under test (and the gateway's loader process) runs pinned to CPU {a['proxy_cpus']}; "
                 "the load generator (its own process, aiohttp) and the mock upstream to the other cores.")
    else:
        cores = ("The load generator (its own process, aiohttp), the mock upstream and the proxy share the "
                 "machine's cores.")
    lost = load["answered_through_gateway"] - load["stored_rows"]
    return "\n".join([
        f"Measured {s['date']} on {s['machine']} with `{s['command']}`. {cores} Every request uses one of "
        f"{ACCOUNTS:,} keys (accounts); each row is {a['requests']:,} requests after 200 of warm-up with "
        f"{a['concurrency']} in flight to each target. Latency rows: requests alternate between the proxy and "
        "the mock called directly, in the same run, so both see the same load at the same moments; added = the "
        "proxy's percentile minus the direct calls' beside it. The load generator and the mock run with Python's "
        "garbage collector off: its pauses would land in both targets' tails and hide the proxy's.", "",
        f"Latency: the mock answers after {a['latency_ms']:g} ms (a model's answer takes seconds; streams: one "
        "event per word, 2 ms apart).", "", *rows, "",
        f"Throughput: the mock answers after {a['fast_latency_ms']:g} ms, so the proxy's own cost is the "
        f"limit; {a['concurrency']} requests in flight.{ratio}", "", *through, "",
        f"Load test: {load['requests']:,} streamed requests with {a['load_concurrency']} in flight through the "
        f"gateway: {load['errors']} errors (statuses {load['statuses']}), {load['rps']:.0f} req/s, p99 "
        f"{load['p99_ms']:.0f} ms. Exchanges answered through the gateway in this run: "
        f"{load['answered_through_gateway']:,}; rows in the store after it stopped: {load['stored_rows']:,} "
        f"(lost: {lost}).", ""])



def markdown_live(s: dict) -> str:
    """The gateway-live section: added latency with live routing off and on, the floors, what it scored."""
    a, ref, live, load = s["args"], s["reference"], s["live"], s["load_test"]
    rows = [("| mode | live routing | p50 ms | p99 ms | added p50 ms | added p99 ms | added TTFB p50 ms | "
             "added TTFB p99 ms | gateway CPU ms per request | errors |"), "|---|---|---|---|---|---|---|---|---|---|"]
    missed: dict[str, list[str]] = {"on": [], "off": []}
    for mode, by in s["rows"].items():
        for k in ("off", "on"):
            base = by[f"direct_{k}"]
            rows.append(f"| {mode} | (direct, beside {k}) | {base['p50_ms']:.2f} | {base['p99_ms']:.2f} | | | | | | "
                        f"{base['errors']} |")
            r = by[k]
            added50, added99 = r["p50_ms"] - base["p50_ms"], r["p99_ms"] - base["p99_ms"]
            if added50 > 1.0 or added99 > 5.0:
                missed[k].append(f"{mode} added p50 {added50:+.2f} ms, p99 {added99:+.2f} ms")
            rows.append(f"| {mode} | {k} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {added50:+.2f} | {added99:+.2f} | "
                        f"{r['ttfb_p50_ms'] - base['ttfb_p50_ms']:+.2f} | {r['ttfb_p99_ms'] - base['ttfb_p99_ms']:+.2f}"
                        f" | {r['proxy_cpu_ms_per_request']:.2f} | {r['errors']} |")
    for k, v in s["lost"].items():
        if v["answered"] != v["stored_rows"]:
            missed[k].append(f"{v['answered'] - v['stored_rows']} exchanges lost")
    floors = {k: f"MISSED ({'; '.join(m)})" if m else "met" for k, m in missed.items()}
    # on minus off, each as added over the direct calls beside it: what live routing itself adds
    def added(by: dict, k: str, q: str) -> float:
        return by[k][q] - by[f"direct_{k}"][q]
    delta = "; ".join(f"{mode} added p50 {added(by, 'on', 'p50_ms') - added(by, 'off', 'p50_ms'):+.2f} ms, p99 "
                      f"{added(by, 'on', 'p99_ms') - added(by, 'off', 'p99_ms'):+.2f} ms, CPU "
                      f"{by['on']['proxy_cpu_ms_per_request'] - by['off']['proxy_cpu_ms_per_request']:+.2f} ms per "
                      "request" for mode, by in s["rows"].items())
    served_on = sum(sum(by["on"]["statuses"].values()) for by in s["rows"].values())
    cores = (f"each gateway (and its loader process) pinned to CPU {a['proxy_cpus']}, the load generator and "
             "the mock to the other cores" if a.get("proxy_cpus") else "everything sharing every core")
    before, after = (", ".join(f"{x:.2f}" for x in s["load_average"][w]) for w in ("before", "after"))
    return "\n".join([
        (f"Measured {s['date']} on {s['machine']} with `{s['command']}`; load average (1, 5, 15 min) {before} "
        f"before the run, {after} after it. Two gateways on the same "
        f"settings, one with `--live-reference` (calibrated on {ref['scenario']} at scale {ref['scale']:g}: "
        f"{ref['sessions']:,} organic sessions of {ref['accounts']:,} accounts) and one without, {cores}. "
        f"One gateway at a time, its requests alternating with direct calls to the mock "
        f"({a['requests']:,} each per row after 200 of warm-up, {a['concurrency']} in flight to each; the mock "
        f"answers after {a['latency_ms']:g} ms); added = a gateway's percentile minus the direct calls' beside it."),
        "", *rows, "",
        (f"Live routing scored {live['looks_in_rows']:,.0f} of the {served_on:,} requests the gateway with it answered "
        f"in these rows (every key is at allow); over them and the load test it sent {live['routed']:,.0f} of "
        f"{live['looks']:,.0f} scored requests to the fallback model ({live['sessions_routed']:,.0f} sessions crossed "
        f"their threshold). Load test through it: {load['requests']:,} streams with "
        f"{a['load_concurrency']} in flight, {load['errors']} errors, p99 {load['p99_ms']:.0f} ms. Exchanges "
        f"answered / stored: off {s['lost']['off']['answered']:,} / {s['lost']['off']['stored_rows']:,}, on "
        f"{s['lost']['on']['answered']:,} / {s['lost']['on']['stored_rows']:,}. Floors (added 1 ms p50, 5 ms p99, "
        f"no exchange lost) with live routing on: {floors['on']}; off, in the same run: {floors['off']}. On minus "
        f"off: {delta}."), ""])


if __name__ == "__main__":
    main()
