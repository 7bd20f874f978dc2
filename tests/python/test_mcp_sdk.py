#!/usr/bin/env python3
"""quantbox through the official MCP Python SDK (mcp 2.3.0), over stdio and streamable HTTP.

Usage:
    test_mcp_sdk.py QUANTBOX_BIN SCRATCH_DIR
or with the environment variables QUANTBOX_BIN and QUANTBOX_TEST_DIR.

Optional environment: QUANTBOX_CGROUP_PARENT (default `qbtest-pysdk-<pid>`),
QBTEST_TRANSPORTS (comma-separated subset of `stdio,http`; default both).

For each transport it starts its own quantbox (`quantbox mcp` as the stdio client's
child; `quantbox serve --listen 127.0.0.1:0` as a subprocess, for HTTP), initializes an
SDK `ClientSession`, checks the tool listing and schemas, walks one sandbox through
create, execute, list, status, bad input, terminate and terminate-again, runs a
momentum agent in a sandbox of its own (and reads the run back through performance_report
and get_execution_analytics), and then walks deployments through deploy (configuration as an object and as a JSON string), scale up
and down, fleet health, export of an instance as a template (and a sandbox made from
it), a failing setup step, bad input, and scale to 0. Everything it creates is
terminated (deployments scaled to 0) and every server it starts is stopped, also on
failure.

Exit status 0 when every check passed; 1 with the failed check on stderr otherwise; 2 on
bad usage.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

try:
    import anyio
    import anyio.to_thread
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client
    from mcp.client.streamable_http import streamable_http_client
except ImportError as e:  # pragma: no cover - environment problem
    print(f"FAIL: the MCP Python SDK is not importable ({e}); install tests/python/requirements.txt", file=sys.stderr)
    sys.exit(2)

EXPECTED_TOOLS = {
    "create_e2b_sandbox",
    "execute_e2b_process",
    "list_e2b_sandboxes",
    "terminate_e2b_sandbox",
    "get_e2b_sandbox_status",
    "deploy_e2b_template",
    "scale_e2b_deployment",
    "monitor_e2b_health",
    "export_e2b_template",
    "get_system_metrics",
    "performance_report",
    "get_execution_analytics",
    "monitor_strategy_health",
    "run_e2b_agent",
}

# tool -> (parameter names of the contract, required, {parameter: default})
SCHEMA_CONTRACT: dict[str, tuple[set[str], set[str], dict[str, Any]]] = {
    "create_e2b_sandbox": (
        {"name", "template", "timeout", "memory_mb", "cpu_count", "env_vars", "metadata", "provider"},
        {"name"},
        {"template": "base", "timeout": 300, "memory_mb": 512, "cpu_count": 1},
    ),
    "execute_e2b_process": (
        {"sandbox_id", "command", "args", "timeout", "capture_output", "cwd", "env", "stdin", "user"},
        {"sandbox_id", "command"},
        {"args": [], "timeout": 60, "capture_output": True},
    ),
    "list_e2b_sandboxes": (
        {"status_filter", "deployment_id", "metadata"},
        set(),
        {"status_filter": "all"},
    ),
    "terminate_e2b_sandbox": (
        {"sandbox_id", "force"},
        {"sandbox_id"},
        {"force": False},
    ),
    "get_e2b_sandbox_status": (
        {"sandbox_id", "log_lines"},
        {"sandbox_id"},
        {"log_lines": 100},
    ),
    "deploy_e2b_template": (
        {"template_name", "category", "configuration"},
        {"template_name", "category"},
        {},
    ),
    "scale_e2b_deployment": (
        {"deployment_id", "instance_count", "auto_scale", "min_instances", "target_cpu_percent"},
        {"deployment_id", "instance_count"},
        {"auto_scale": False},
    ),
    "monitor_e2b_health": (
        {"include_all_sandboxes"},
        set(),
        {"include_all_sandboxes": False},
    ),
    "export_e2b_template": (
        {"sandbox_id", "template_name", "include_data"},
        {"sandbox_id", "template_name"},
        {"include_data": False},
    ),
    "get_system_metrics": (
        {"metrics", "time_range_minutes", "include_history"},
        set(),
        {"metrics": ["cpu", "memory", "disk", "network"], "time_range_minutes": 60, "include_history": False},
    ),
    "performance_report": (
        {"strategy", "period_days", "include_benchmark", "use_gpu", "benchmark", "risk_free_rate", "periods_per_year"},
        {"strategy"},
        {"period_days": 30, "include_benchmark": False, "use_gpu": False, "risk_free_rate": 0.0, "periods_per_year": 252.0},
    ),
    "get_execution_analytics": (
        {"time_period", "strategy"},
        set(),
        {"time_period": "24h"},
    ),
    "monitor_strategy_health": (
        {"strategy"},
        {"strategy"},
        {},
    ),
    "run_e2b_agent": (
        {"sandbox_id", "agent_type", "symbols", "strategy_params", "use_gpu"},
        {"sandbox_id", "agent_type", "symbols"},
        {"use_gpu": False},
    ),
}

ID_RE = re.compile(r"^[a-z0-9]{20}$")
DEP_ID_RE = re.compile(r"^dep_[a-z0-9]{16}$")
RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

CALL_TIMEOUT_S = 120.0  # one tool call (creating a sandbox can take a while on a loaded CI host)
TRANSPORT_TIMEOUT_S = 600.0  # one transport's whole walk
SERVER_START_TIMEOUT_S = 60.0


class CheckFailed(Exception):
    pass


def check(cond: Any, what: str) -> None:
    if not cond:
        raise CheckFailed(what)


def parse_rfc3339(s: Any, field: str) -> datetime:
    check(isinstance(s, str) and RFC3339_RE.match(s), f"{field} should be an RFC 3339 timestamp, got {s!r}")
    # fromisoformat in 3.11 takes `Z` and any number of fraction digits up to 6; trim longer ones.
    t = re.sub(r"(\.\d{6})\d+", r"\1", s)
    try:
        d = datetime.fromisoformat(t.replace("z", "Z"))
    except ValueError as e:
        raise CheckFailed(f"{field} {s!r} does not parse as a timestamp: {e}") from e
    check(d.utcoffset() is not None, f"{field} {s!r} has no UTC offset")
    return d


class Walk:
    """One transport's checks, recorded for the summary."""

    def __init__(self, transport: str, session: ClientSession, cgroup_parent: str, base_url: str | None = None) -> None:
        self.transport = transport
        self.base_url = base_url  # the server's URL when MCP runs over its HTTP endpoint
        self.session = session
        self.cgroup_parent = cgroup_parent
        self.passed: list[str] = []
        self.created: list[str] = []  # sandbox ids not yet seen terminated
        self.deployments: list[str] = []  # deployment ids not yet seen scaled to 0
        self.walk_sandboxes: set[str] = set()  # every sandbox the deployment walk saw made
        self.last_call = ""

    def ok(self, what: str) -> None:
        self.passed.append(what)
        print(f"  [{self.transport}] ok: {what}", flush=True)

    async def raw(self, tool: str, args: dict[str, Any]) -> Any:
        self.last_call = f"{tool}({json.dumps(args)})"
        return await self.session.call_tool(tool, args, read_timeout_seconds=CALL_TIMEOUT_S)

    def _structured(self, tool: str, args: dict[str, Any], res: Any) -> dict[str, Any]:
        sc = res.structured_content
        check(isinstance(sc, dict), f"{tool}({json.dumps(args)}): structured content should be a JSON object, got {sc!r}")
        texts = [c.text for c in res.content if getattr(c, "type", None) == "text"]
        check(texts, f"{tool}: the result should also carry a text content block, got {res.content!r}")
        try:
            as_json = json.loads(texts[0])
        except ValueError as e:
            raise CheckFailed(f"{tool}: the text content block is not JSON ({e}): {texts[0][:300]!r}") from e
        check(as_json == sc, f"{tool}: the text content block should hold the structured content; text {texts[0][:300]!r}")
        return sc

    async def call(self, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        """A call that must succeed; the SDK validates structured content against outputSchema."""
        res = await self.raw(tool, args)
        sc = self._structured(tool, args, res)
        check(not res.is_error, f"{tool}({json.dumps(args)}) failed: {json.dumps(sc)}")
        return sc

    async def call_err(self, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        """A call that must come back as a tool error; returns the `error` object."""
        res = await self.raw(tool, args)
        sc = self._structured(tool, args, res)
        check(res.is_error, f"{tool}({json.dumps(args)}) should be an error result (isError true), got {json.dumps(sc)}")
        check(set(sc) == {"error"}, f"{tool}: an error result should be {{\"error\": {{...}}}}, got {json.dumps(sc)}")
        err = sc["error"]
        check(isinstance(err, dict) and isinstance(err.get("code"), str) and isinstance(err.get("message"), str),
              f"{tool}: error should have string code and message, got {json.dumps(err)}")
        check(set(err) <= {"code", "message", "details"}, f"{tool}: unexpected keys in error {json.dumps(err)}")
        if "details" in err:
            check(isinstance(err["details"], dict), f"{tool}: error details should be an object, got {json.dumps(err)}")
        return err

    # ---- the walk ----

    async def run(self) -> None:
        init = self.session.initialize_result
        check(init is not None, "the session should be initialized")
        check(init.server_info.name == "quantbox", f"server name should be quantbox, got {init.server_info.name!r}")
        check(init.capabilities.tools is not None, "the server should announce the tools capability")
        self.ok(f"initialize (protocol {init.protocol_version}, server {init.server_info.name} {init.server_info.version})")

        await self.check_tools()
        sid = await self.check_create()
        await self.check_execute(sid)
        await self.check_list(sid)
        await self.check_status(sid)
        await self.check_system_metrics(sid)
        await self.check_trading_tools()
        await self.check_agent()
        await self.check_bad_input(sid)
        await self.check_terminate(sid)
        await self.check_deployments()

    async def check_tools(self) -> None:
        listing = await self.session.list_tools()
        names = [t.name for t in listing.tools]
        check(sorted(names) == sorted(EXPECTED_TOOLS) and len(names) == len(EXPECTED_TOOLS),
              f"tools/list should give exactly {sorted(EXPECTED_TOOLS)}, got {names}")
        check(listing.next_cursor is None, "tools/list should fit in one page")
        self.ok(f"tools/list: exactly the {len(EXPECTED_TOOLS)} tools of this version")
        for t in listing.tools:
            params, required, defaults = SCHEMA_CONTRACT[t.name]
            s = t.input_schema
            check(s.get("type") == "object", f"{t.name}: input schema type should be object, got {s.get('type')!r}")
            props = s.get("properties")
            check(isinstance(props, dict), f"{t.name}: input schema has no properties")
            check(set(props) == params, f"{t.name}: parameters should be {sorted(params)}, got {sorted(props)}")
            check(set(s.get("required", [])) == required,
                  f"{t.name}: required should be {sorted(required)}, got {s.get('required')}")
            for p, d in defaults.items():
                check("default" in props[p], f"{t.name}.{p}: the schema should carry its default {d!r}")
                got = props[p]["default"]
                check(got == d and isinstance(got, bool) == isinstance(d, bool),
                      f"{t.name}.{p}: default should be {d!r}, got {got!r}")
            for p in required:
                check("default" not in props[p], f"{t.name}.{p} is required and should have no default")
            check(isinstance(t.output_schema, dict) and t.output_schema.get("type") == "object",
                  f"{t.name}: should have an object outputSchema, got {t.output_schema!r}")
            check(t.description, f"{t.name}: should have a description")
        self.ok("input schemas: object, contract parameter names, required, defaults; every tool has an outputSchema")

    async def check_create(self) -> str:
        name = f"pysdk-{self.transport}-{os.getpid()}-{int(time.time())}"
        args = {"name": name, "memory_mb": 256, "metadata": {"suite": "pysdk"}}
        t0 = time.monotonic()
        r = await self.call("create_e2b_sandbox", args)
        elapsed = time.monotonic() - t0
        sid = r.get("sandbox_id")
        if isinstance(sid, str):
            self.created.append(sid)
        check(isinstance(sid, str) and ID_RE.match(sid), f"sandbox_id should be 20 chars of [a-z0-9], got {sid!r}")
        check(r.get("name") == name, f"name should be {name!r}, got {r.get('name')!r}")
        check(r.get("status") == "running", f"status should be running, got {r.get('status')!r}")
        check(r.get("template") == "base", f"template should be base, got {r.get('template')!r}")
        check(r.get("provider") == "local", f"provider should be local, got {r.get('provider')!r}")
        res = r.get("resources")
        check(isinstance(res, dict) and res.get("memory_mb") == 256 and res.get("cpu_count") == 1,
              f"resources should be {{memory_mb: 256, cpu_count: 1}}, got {res!r}")
        check("endpoint" in r, "the create result should have an endpoint field (null or a URL)")
        created = parse_rfc3339(r.get("created_at"), "created_at")
        expires = parse_rfc3339(r.get("expires_at"), "expires_at")
        life = (expires - created).total_seconds()
        check(abs(life - 300) <= 5, f"expires_at - created_at should be the default 300 s lifetime, got {life:.1f} s")
        self.ok(f"create_e2b_sandbox -> {sid} running, 256 MB, RFC 3339 times, 300 s lifetime ({elapsed:.2f} s)")
        return sid

    async def check_execute(self, sid: str) -> None:
        r = await self.call("execute_e2b_process", {"sandbox_id": sid, "command": "python3 -c 'print(6*7)'", "args": []})
        check(r.get("stdout") == "42\n", f"stdout should be '42\\n', got {r.get('stdout')!r} (stderr {r.get('stderr')!r})")
        check(r.get("exit_code") == 0, f"exit_code should be 0, got {r.get('exit_code')!r} (stderr {r.get('stderr')!r})")
        check(r.get("timed_out") is False, f"timed_out should be false, got {r.get('timed_out')!r}")
        check(r.get("signal") is None, f"signal should be null, got {r.get('signal')!r}")
        check(r.get("sandbox_id") == sid, f"sandbox_id should be {sid}, got {r.get('sandbox_id')!r}")
        check(r.get("args") == [], f"args should be [], got {r.get('args')!r}")
        check(isinstance(r.get("execution_time_ms"), int) and r["execution_time_ms"] >= 0,
              f"execution_time_ms should be a non-negative integer, got {r.get('execution_time_ms')!r}")
        parse_rfc3339(r.get("started_at"), "started_at")
        parse_rfc3339(r.get("finished_at"), "finished_at")
        self.ok("execute_e2b_process shell form: python3 -c 'print(6*7)' -> stdout '42\\n', exit 0, not timed out")

        args = ["-c", "import sys; sys.exit(3)"]
        r = await self.call("execute_e2b_process", {"sandbox_id": sid, "command": "python3", "args": args})
        check(r.get("exit_code") == 3, f"exit_code should be 3, got {r.get('exit_code')!r} (stderr {r.get('stderr')!r})")
        check(r.get("timed_out") is False, f"timed_out should be false, got {r.get('timed_out')!r}")
        check(r.get("command") == "python3" and r.get("args") == args,
              f"command/args should be echoed, got {r.get('command')!r} {r.get('args')!r}")
        self.ok("execute_e2b_process direct form: python3 -c 'sys.exit(3)' -> exit 3")

    async def check_list(self, sid: str) -> None:
        r = await self.call("list_e2b_sandboxes", {"status_filter": "running", "metadata": {"suite": "pysdk"}})
        boxes = r.get("sandboxes")
        check(isinstance(boxes, list), f"sandboxes should be a list, got {boxes!r}")
        check(r.get("total_count") == len(boxes), f"total_count {r.get('total_count')!r} should equal len(sandboxes) {len(boxes)}")
        mine = [b for b in boxes if b.get("sandbox_id") == sid]
        check(len(mine) == 1, f"the running/suite=pysdk listing should contain {sid} once, got {[b.get('sandbox_id') for b in boxes]}")
        b = mine[0]
        check(b.get("status") == "running", f"listed status should be running, got {b.get('status')!r}")
        check(all(x.get("status") == "running" for x in boxes), "status_filter running listed a non-running sandbox")
        check(all((x.get("metadata") or {}).get("suite") == "pysdk" for x in boxes if "metadata" in x),
              "metadata filter listed a sandbox without suite=pysdk")
        check(isinstance(b.get("resources"), dict) and b["resources"].get("memory_mb") == 256,
              f"listed resources should say 256 MB, got {b.get('resources')!r}")
        # A filter that matches nothing of ours.
        r2 = await self.call("list_e2b_sandboxes", {"status_filter": "running", "metadata": {"suite": "no-such-suite-pysdk"}})
        check(all(x.get("sandbox_id") != sid for x in r2.get("sandboxes", [])),
              "a non-matching metadata filter still listed the sandbox")
        self.ok(f"list_e2b_sandboxes(running, suite=pysdk) contains it ({len(boxes)} listed); a non-matching filter does not")

    async def check_status(self, sid: str) -> None:
        r = await self.call("get_e2b_sandbox_status", {"sandbox_id": sid})
        check(r.get("sandbox_id") == sid, f"sandbox_id should be {sid}, got {r.get('sandbox_id')!r}")
        check(r.get("status") == "running", f"status should be running, got {r.get('status')!r}")
        h = r.get("health")
        check(isinstance(h, dict) and h.get("status") in ("healthy", "degraded", "unhealthy")
              and isinstance(h.get("reasons"), list), f"health should be {{status, reasons[]}}, got {h!r}")
        ru = r.get("resource_usage")
        check(isinstance(ru, dict) and ru.get("memory_limit_mb") == 256,
              f"resource_usage.memory_limit_mb should be 256 for a running sandbox, got {ru!r}")
        logs = r.get("recent_logs")
        check(isinstance(logs, list), f"recent_logs should be a list, got {logs!r}")
        lines = [(l.get("stream"), l.get("line")) for l in logs]
        check(("stdout", "42") in lines, f"recent_logs should contain the stdout line '42', got {lines}")
        for l in logs:
            parse_rfc3339(l.get("timestamp"), "recent_logs[].timestamp")
        parse_rfc3339(r.get("expires_at"), "expires_at")
        check(isinstance(r.get("uptime_s"), (int, float)) and r["uptime_s"] >= 0,
              f"uptime_s should be a non-negative number, got {r.get('uptime_s')!r}")
        self.ok(f"get_e2b_sandbox_status: running, health {h['status']}, recent_logs has stdout '42' ({len(logs)} lines)")

    async def check_system_metrics(self, sid: str) -> None:
        r = await self.call("get_system_metrics", {
            "metrics": ["cpu", "memory", "disk", "network", "gpu", "sandboxes"],
            "time_range_minutes": 5, "include_history": True})
        parse_rfc3339(r.get("timestamp"), "timestamp")
        host = r.get("host")
        check(isinstance(host, dict) and host.get("hostname") and isinstance(host.get("uptime_s"), int),
              f"host should have hostname and uptime_s, got {host!r}")
        m = r.get("metrics", {})
        mem = m.get("memory")
        meminfo = dict(l.split(":", 1) for l in Path("/proc/meminfo").read_text().splitlines())
        total_mb = int(meminfo["MemTotal"].split()[0]) / 1024
        check(isinstance(mem, dict) and abs(mem.get("total_mb", 0) - total_mb) < 0.01,
              f"memory.total_mb should be MemTotal ({total_mb:.2f} MB), got {mem!r}")
        cpu = m.get("cpu")
        check(isinstance(cpu, dict) and cpu.get("cores") == os.cpu_count() and len(cpu.get("load_avg", [])) == 3,
              f"cpu should have cores = {os.cpu_count()} and three load averages, got {cpu!r}")
        check(isinstance(m.get("disk"), list) and any(d.get("mount_point") == "/" for d in m["disk"]),
              f"disk should list /, got {m.get('disk')!r}")
        check(isinstance(m.get("network"), list) and any(n.get("interface") == "lo" for n in m["network"]),
              f"network should list lo, got {m.get('network')!r}")
        gpu = m.get("gpu")
        check(isinstance(gpu, list) or (isinstance(gpu, dict) and gpu.get("available") is False and gpu.get("reason")),
              f"gpu should be a device list or {{available: false, reason}}, got {gpu!r}")
        sb = m.get("sandboxes")
        check(isinstance(sb, dict) and sb.get("running", 0) >= 1,
              f"sandboxes.running should count our sandbox, got {sb!r}")
        hist = r.get("history", {})
        check(set(hist) == {"cpu", "memory", "disk", "network", "gpu", "sandboxes"},
              f"history should have one entry per metric, got {sorted(hist)}")
        mh = hist["memory"]
        check(mh.get("samples", 0) >= 1 and mh.get("points") and mh.get("min") is not None
              and mh["min"] <= mh["avg"] <= mh["max"] and mh.get("p95") is not None,
              f"memory history should have points and min <= avg <= max, p95, got {mh!r}")
        e = await self.call_err("get_system_metrics", {"metrics": ["cpu", "nope"]})
        self.check_error(e, "invalid_argument", "metrics[1]", "an unknown metric name")
        e = await self.call_err("get_system_metrics", {"time_range_minutes": 10081})
        self.check_error(e, "invalid_argument", "time_range_minutes", "time_range_minutes above 7 days")
        if self.base_url is not None:
            # The server timed these MCP calls into its Prometheus histogram.
            text = await anyio.to_thread.run_sync(
                lambda: urllib.request.urlopen(f"{self.base_url}/metrics", timeout=10).read().decode())
            for outcome in ("ok", "invalid_argument"):
                series = (f'quantbox_mcp_tool_call_duration_seconds_count{{tool="get_system_metrics",'
                          f'transport="http",outcome="{outcome}"}} ')
                line = next((l for l in text.splitlines() if l.startswith(series)), None)
                check(line is not None and float(line.split()[-1]) >= 1,
                      f"/metrics should count the MCP calls as {series.strip()}, got {line!r}")
            self.ok("/metrics counts these MCP tool calls by tool, transport and outcome")
        self.ok(f"get_system_metrics: memory total = MemTotal, {cpu['cores']} cores, gpu "
                f"{'devices' if isinstance(gpu, list) else 'unavailable with a reason'}, {sb['running']} running, "
                f"history of {mh['samples']} memory readings; unknown metric and 10081 minutes refused")

    async def check_trading_tools(self) -> None:
        e = await self.call_err("performance_report", {"strategy": "no-such-strategy-pysdk"})
        self.check_error(e, "not_found", None, "performance_report of an unknown strategy")
        e = await self.call_err("performance_report", {"strategy": "x", "period_days": "30"})
        self.check_error(e, "invalid_argument", "period_days", "period_days as a string")
        e = await self.call_err("monitor_strategy_health", {"strategy": "no-such-strategy-pysdk"})
        self.check_error(e, "not_found", None, "monitor_strategy_health of an unknown strategy")
        x = await self.call("get_execution_analytics", {"time_period": "1h", "strategy": "no-such-strategy-pysdk"})
        check(x.get("orders", {}).get("total") == 0 and x.get("slippage", {}).get("avg_bps") is None
              and isinstance(x.get("note"), str),
              f"an empty window should give zero counts, null averages and a note, got {x!r}")
        e = await self.call_err("get_execution_analytics", {"time_period": "2d"})
        self.check_error(e, "invalid_argument", "time_period", "an unknown time_period")
        self.ok("performance_report / monitor_strategy_health: unknown strategy -> not_found; "
                "get_execution_analytics: empty window -> zero counts with a note; bad arguments named")

    async def check_agent(self) -> None:
        """A momentum agent on AAPL 2010-2012 in a sandbox of its own; the analytics tools
        see the run; a `pairs` agent on one symbol is refused. The sandbox is terminated
        before the deployment walk (which counts what runs)."""
        name = f"pysdk-agent-{self.transport}-{os.getpid()}"
        r = await self.call("create_e2b_sandbox", {"name": name, "memory_mb": 256,
                                                   "metadata": {"suite": f"pysdk-agent-{self.transport}"}})
        sid = r.get("sandbox_id")
        if isinstance(sid, str):
            self.created.append(sid)
        check(isinstance(sid, str) and ID_RE.match(sid) and r.get("status") == "running",
              f"create_e2b_sandbox for the agent should give a running sandbox, got {json.dumps(r)}")

        strategy = f"pysdk-{self.transport}"
        t0 = time.monotonic()
        r = await self.call("run_e2b_agent", {
            "sandbox_id": sid, "agent_type": "momentum", "symbols": ["AAPL"],
            "strategy_params": {"start": "2010-01-01", "end": "2012-12-31", "strategy_name": strategy}})
        elapsed = time.monotonic() - t0
        check(r.get("status") == "completed",
              f"run_e2b_agent momentum should complete, got status {r.get('status')!r} (reason {r.get('reason')!r}, "
              f"stdout_tail {r.get('stdout_tail')!r}, stderr_tail {r.get('stderr_tail')!r})")
        check(r.get("sandbox_id") == sid and r.get("agent_type") == "momentum" and r.get("strategy_name") == strategy,
              f"sandbox_id/agent_type/strategy_name should be {sid}/momentum/{strategy}, got "
              f"{r.get('sandbox_id')!r}/{r.get('agent_type')!r}/{r.get('strategy_name')!r}")
        res = r.get("results")
        check(isinstance(res, dict), f"results should be an object, got {res!r}")
        want = {"orders": 74, "fills": 74, "bars_processed": 754}
        got = {k: res.get(k) for k in want}
        check(got == want, f"results should have {want}, got {json.dumps(res)}")
        eq = res.get("final_equity")
        check(isinstance(eq, (int, float)) and not isinstance(eq, bool) and abs(eq - 166904.90684228097) < 1e-6,
              f"results.final_equity should be 166904.90684228097 (within 1e-6), got {eq!r}")
        total_return = res.get("total_return")
        check(isinstance(total_return, (int, float)) and not isinstance(total_return, bool),
              f"results.total_return should be a number, got {total_return!r}")
        trades = res.get("trades")
        check(isinstance(trades, int) and not isinstance(trades, bool) and trades >= 0,
              f"results.trades should be a non-negative integer, got {trades!r}")
        gpu = r.get("gpu")
        check(isinstance(gpu, dict) and gpu.get("requested") is False and gpu.get("used") is False
              and isinstance(gpu.get("reason"), str),
              f"gpu should be {{requested: false, used: false, reason}}, got {gpu!r}")
        self.ok(f"run_e2b_agent momentum on AAPL 2010-2012 -> completed: {res['bars_processed']} bars, "
                f"{res['orders']} orders, {res['fills']} fills, {trades} trades, final equity {eq:.4f}, "
                f"gpu not used ({elapsed:.2f} s)")

        rep = await self.call("performance_report", {"strategy": strategy, "period_days": 0, "include_benchmark": True})
        perf = rep.get("performance") or {}
        check(isinstance(perf.get("total_return"), (int, float)) and abs(perf["total_return"] - total_return) < 1e-9,
              f"performance_report total_return should be the run's {total_return!r} (within 1e-9), got "
              f"{perf.get('total_return')!r}")
        bench = rep.get("benchmark")
        check(isinstance(bench, dict) and bench.get("symbol") == "SPX",
              f"benchmark.symbol should be SPX, got {bench!r}")
        check((rep.get("trades") or {}).get("total") == trades,
              f"performance_report trades.total should be the run's {trades}, got {rep.get('trades')!r}")
        self.ok(f"performance_report {strategy} (all days, benchmark): total_return {perf['total_return']:.6f} = the run's, "
                f"benchmark SPX, {trades} trades")

        x = await self.call("get_execution_analytics", {"time_period": "all", "strategy": strategy})
        check((x.get("orders") or {}).get("total") == 74, f"get_execution_analytics orders.total should be 74, got {x.get('orders')!r}")
        check(x.get("simulated") == "true", f"get_execution_analytics simulated should be \"true\", got {x.get('simulated')!r}")
        self.ok(f"get_execution_analytics {strategy} (all): 74 orders, simulated \"true\"")

        e = await self.call_err("run_e2b_agent", {"sandbox_id": sid, "agent_type": "pairs", "symbols": ["AAPL"]})
        self.check_error(e, "invalid_argument", "symbols", "a pairs agent on one symbol")
        self.ok(f"run_e2b_agent pairs on one symbol -> invalid_argument: {e['message']}")

        r = await self.call("terminate_e2b_sandbox", {"sandbox_id": sid})
        check(r.get("status") == "terminated", f"terminating the agent's sandbox {sid}: status should be terminated, got {r.get('status')!r}")
        self.created.remove(sid)
        self.ok(f"terminate_e2b_sandbox {sid} (the agent's) -> terminated")

    async def check_bad_input(self, sid: str) -> None:
        e = await self.call_err("create_e2b_sandbox", {"name": f"pysdk-bad-{os.getpid()}", "timeout": "300"})
        check(e["code"] == "invalid_argument", f"create with timeout \"300\": code should be invalid_argument, got {e}")
        check("timeout" in e["message"], f"create with timeout \"300\": the message should name `timeout`, got {e['message']!r}")
        if "details" in e and "field" in e["details"]:
            check(e["details"]["field"] == "timeout", f"details.field should be timeout, got {e['details']}")
        self.ok(f"create_e2b_sandbox timeout=\"300\" -> invalid_argument: {e['message']}")

        e = await self.call_err("terminate_e2b_sandbox", {"sandbox_id": sid, "force": "false"})
        check(e["code"] == "invalid_argument", f"terminate with force \"false\": code should be invalid_argument, got {e}")
        check("force" in e["message"], f"terminate with force \"false\": the message should name `force`, got {e['message']!r}")
        if "details" in e and "field" in e["details"]:
            check(e["details"]["field"] == "force", f"details.field should be force, got {e['details']}")
        r = await self.call("get_e2b_sandbox_status", {"sandbox_id": sid, "log_lines": 0})
        check(r.get("status") == "running", f"a rejected terminate must leave the sandbox running, status is {r.get('status')!r}")
        self.ok(f"terminate_e2b_sandbox force=\"false\" -> invalid_argument ({e['message']}); sandbox still running")

        unknown = "a" * 20
        e = await self.call_err("execute_e2b_process", {"sandbox_id": unknown, "command": "true"})
        check(e["code"] == "not_found", f"execute on unknown id: code should be not_found, got {e}")
        check(unknown in e["message"] or "sandbox_id" in e["message"],
              f"execute on unknown id: the message should name the id or sandbox_id, got {e['message']!r}")
        self.ok(f"execute_e2b_process on {unknown} -> not_found: {e['message']}")

        # And the listing did not grow a sandbox from the rejected create.
        r = await self.call("list_e2b_sandboxes", {"metadata": {}})
        check(all(not b.get("name", "").startswith("pysdk-bad-") for b in r.get("sandboxes", [])),
              "the rejected create left a sandbox behind")

    async def check_terminate(self, sid: str) -> None:
        t0 = time.monotonic()
        r = await self.call("terminate_e2b_sandbox", {"sandbox_id": sid})
        elapsed = time.monotonic() - t0
        check(r.get("sandbox_id") == sid, f"sandbox_id should be {sid}, got {r.get('sandbox_id')!r}")
        check(r.get("status") == "terminated", f"status should be terminated, got {r.get('status')!r}")
        check(isinstance(r.get("message"), str) and r["message"], f"message should be a non-empty string, got {r.get('message')!r}")
        check("already" not in r["message"].lower(), f"the first terminate should not say already stopped: {r['message']!r}")
        parse_rfc3339(r.get("terminated_at"), "terminated_at")
        self.created.remove(sid)
        self.ok(f"terminate_e2b_sandbox -> terminated ({elapsed:.2f} s): {r['message']}")

        r = await self.call("get_e2b_sandbox_status", {"sandbox_id": sid})
        check(r.get("status") == "stopped", f"status after terminate should be stopped, got {r.get('status')!r}")
        self.ok(f"get_e2b_sandbox_status after terminate -> stopped (stop_reason {r.get('stop_reason')!r})")

        r = await self.call("terminate_e2b_sandbox", {"sandbox_id": sid})
        check(r.get("status") == "terminated", f"second terminate: status should be terminated, got {r.get('status')!r}")
        check("already" in r.get("message", "").lower() and "stopped" in r.get("message", "").lower(),
              f"second terminate: message should say it was already stopped, got {r.get('message')!r}")
        self.ok(f"terminate again -> succeeds: {r['message']}")

        r = await self.call("list_e2b_sandboxes", {"status_filter": "running", "metadata": {"suite": "pysdk"}})
        check(all(b.get("sandbox_id") != sid for b in r.get("sandboxes", [])),
              "the terminated sandbox is still listed as running")
        r = await self.call("list_e2b_sandboxes", {"status_filter": "stopped", "metadata": {"suite": "pysdk"}})
        check(any(b.get("sandbox_id") == sid for b in r.get("sandboxes", [])),
              "the terminated sandbox should be listed under status_filter stopped")
        self.ok("list_e2b_sandboxes: no longer running, listed as stopped")

        # Nothing of it is left on the host: no cgroup of it under our parent groups.
        parents = cgroup_parent_dirs(self.cgroup_parent)
        if parents:
            left = [str(p) for root in parents for p in root.iterdir() if p.is_dir() and sid in p.name]
            check(not left, f"cgroups of the terminated sandbox are left: {left}")
            self.ok(f"no cgroup of it is left under {len(parents)} parent group(s)")

    # ---- deployments, fleet health, export ----

    def check_error(self, e: dict[str, Any], code: str, field: str | None, what: str) -> None:
        """`e` (an `error` object) has `code` and, for a field error, names `field`."""
        check(e["code"] == code, f"{what}: code should be {code}, got {json.dumps(e)}")
        if field is not None:
            check(field in e["message"], f"{what}: the message should name `{field}`, got {e['message']!r}")
            if "details" in e and "field" in e["details"]:
                check(str(e["details"]["field"]).startswith(field),
                      f"{what}: details.field should be {field}…, got {e['details']}")

    async def running_ids(self, **filters: Any) -> set[str]:
        r = await self.call("list_e2b_sandboxes", {"status_filter": "running", **filters})
        boxes = r.get("sandboxes")
        check(isinstance(boxes, list), f"sandboxes should be a list, got {boxes!r}")
        check(r.get("total_count") == len(boxes), f"total_count {r.get('total_count')!r} should be len(sandboxes) {len(boxes)}")
        check(all(b.get("status") == "running" for b in boxes), "status_filter running listed a non-running sandbox")
        if "deployment_id" in filters:
            check(all(b.get("deployment_id") == filters["deployment_id"] for b in boxes),
                  f"the deployment_id filter listed sandboxes of another deployment: {boxes}")
        return {b["sandbox_id"] for b in boxes}

    async def sh(self, sid: str, command: str, **extra: Any) -> dict[str, Any]:
        """`command` through the shell in `sandbox_id`; must exit 0."""
        x = await self.call("execute_e2b_process", {"sandbox_id": sid, "command": command, **extra})
        check(x.get("exit_code") == 0 and x.get("timed_out") is False,
              f"`{command}` in {sid} {extra or ''} should exit 0, got exit {x.get('exit_code')!r} "
              f"stdout {x.get('stdout')!r} stderr {x.get('stderr')!r}")
        return x

    def dep_config(self, setup_user: str) -> dict[str, Any]:
        """The configuration of the walk's deployments: every key of the contract (and
        `setup_user`). The setup commands record what they saw in files under the home."""
        # Setup commands run in /home/user, where relative `files` go, whoever sets up:
        # the relative path must work for root too.
        read_cfg = "python3 -c \"import json; print(json.load(open('cfg.json'))['x'])\" > /home/user/out.txt"
        return {
            "memory_mb": 128,
            "cpu_count": 0.5,
            "timeout": 900,
            "env_vars": {"QB_WALK": f"env-{self.transport}", "QB_SPACE": "a b"},
            "files": {"cfg.json": "{\"x\": 1}", "/home/user/conf/abs.txt": "absolute\n"},
            "setup_commands": [read_cfg, "echo \"$QB_WALK $(id -u) $(pwd)\" > /home/user/setup.txt"],
            "setup_user": setup_user,
            "metadata": {"suite": f"pysdk-dep-{self.transport}", "owner": setup_user},
        }

    async def deploy(self, configuration: Any, how: str, setup_uid: int, setup_home: str) -> tuple[str, str]:
        """Deploys `base` for trading with `configuration` (from `dep_config`); checks the
        result and that every configuration key took effect in the first instance.
        Returns (deployment_id, first instance)."""
        t0 = time.monotonic()
        r = await self.call("deploy_e2b_template",
                            {"template_name": "base", "category": "trading", "configuration": configuration})
        elapsed = time.monotonic() - t0
        dep, sid = r.get("deployment_id"), r.get("sandbox_id")
        if isinstance(dep, str):
            self.deployments.append(dep)
        if isinstance(sid, str):
            self.created.append(sid)
            self.walk_sandboxes.add(sid)
        check(isinstance(dep, str) and dep.startswith("dep_") and DEP_ID_RE.match(dep),
              f"deployment_id should be dep_ and 16 of [a-z0-9], got {dep!r}")
        check(isinstance(sid, str) and ID_RE.match(sid), f"sandbox_id should be 20 chars of [a-z0-9], got {sid!r}")
        check(r.get("status") == "deployed", f"status should be deployed, got {r.get('status')!r}")
        check(r.get("template") == "base", f"template should be base, got {r.get('template')!r}")
        check(r.get("category") == "trading", f"category should be trading, got {r.get('category')!r}")
        inst = r.get("instances")
        check(isinstance(inst, list) and len(inst) == 1 and inst[0].get("sandbox_id") == sid
              and inst[0].get("status") == "running",
              f"instances should be [{{sandbox_id: {sid}, status: running}}], got {inst!r}")

        # Listed under its deployment (and its configuration's metadata), with the resources.
        r = await self.call("list_e2b_sandboxes", {"deployment_id": dep})
        boxes = r.get("sandboxes")
        check(isinstance(boxes, list) and [b.get("sandbox_id") for b in boxes] == [sid],
              f"list_e2b_sandboxes(deployment_id={dep}) should list exactly {sid}, got {boxes!r}")
        b = boxes[0]
        check(b.get("deployment_id") == dep and b.get("status") == "running" and b.get("template") == "base",
              f"the listed instance should be running, from base, of {dep}: {json.dumps(b)}")
        check(b.get("resources") == {"memory_mb": 128, "cpu_count": 0.5},
              f"the instance's resources should be configuration.memory_mb 128 / cpu_count 0.5, got {b.get('resources')!r}")
        life = (parse_rfc3339(b.get("expires_at"), "expires_at") - parse_rfc3339(b.get("created_at"), "created_at")).total_seconds()
        check(abs(life - 900) <= 5, f"the instance's lifetime should be configuration.timeout 900 s, got {life:.1f} s")
        meta = configuration if isinstance(configuration, dict) else json.loads(configuration)
        listed = await self.running_ids(metadata=meta["metadata"])
        check(sid in listed, f"a metadata filter of configuration.metadata {meta['metadata']} should list {sid}, got {sorted(listed)}")
        listed = await self.running_ids(metadata={"deployment_id": dep})
        check(listed == {sid}, f"the instance should carry metadata deployment_id={dep}, listed {sorted(listed)}")

        st = await self.call("get_e2b_sandbox_status", {"sandbox_id": sid})
        check(st.get("status") == "running", f"the first instance should be running, got {st.get('status')!r}")
        check(isinstance(st.get("resource_usage"), dict) and st["resource_usage"].get("memory_limit_mb") == 128,
              f"the instance's memory limit should be configuration.memory_mb 128, got {st.get('resource_usage')!r}")

        # files, setup_commands (in order, as setup_user, with env_vars) and env_vars took effect.
        x = await self.sh(sid, "cat /home/user/cfg.json; echo; cat /home/user/conf/abs.txt")
        check(x.get("stdout") == "{\"x\": 1}\nabsolute\n",
              f"configuration.files (relative cfg.json under the home, absolute /home/user/conf/abs.txt) should be "
              f"written as given, got {x.get('stdout')!r}")
        x = await self.sh(sid, "cat /home/user/out.txt /home/user/setup.txt")
        want = f"1\nenv-{self.transport} {setup_uid} {setup_home}\n"
        check(x.get("stdout") == want,
              f"setup_commands should have run in order as uid {setup_uid} in {setup_home} with env_vars: out.txt + setup.txt "
              f"should be {want!r}, got {x.get('stdout')!r}")
        x = await self.sh(sid, "printf '%s|%s|%s' \"$QB_WALK\" \"$QB_SPACE\" \"$(id -u)\"")
        check(x.get("stdout") == f"env-{self.transport}|a b|1000",
              f"configuration.env_vars should be in a later process's environment (as the user): got {x.get('stdout')!r}")
        self.ok(f"deploy_e2b_template (configuration as {how}) -> {dep}, deployed, first instance {sid} listed by "
                f"deployment_id and metadata; 128 MB, 0.5 CPU, 900 s; files written; setup_commands ran in order as "
                f"uid {setup_uid} in {setup_home} with env_vars; env_vars in later processes ({elapsed:.2f} s)")
        return dep, sid

    async def scale(self, dep: str, n: int, before: int) -> dict[str, Any]:
        """Scales `dep` from `before` running instances to `n`; checks that every instance
        is reported (new and kept ones running, removed ones terminated)."""
        t0 = time.monotonic()
        r = await self.call("scale_e2b_deployment", {"deployment_id": dep, "instance_count": n, "auto_scale": False})
        elapsed = time.monotonic() - t0
        inst = r.get("instances")
        check(isinstance(inst, list), f"scale to {n}: instances should be a list, got {inst!r}")
        for i in inst:
            s = i.get("sandbox_id")
            if isinstance(s, str):
                self.walk_sandboxes.add(s)
                if i.get("status") == "running" and s not in self.created:
                    self.created.append(s)
        check(r.get("deployment_id") == dep, f"scale to {n}: deployment_id should be {dep}, got {r.get('deployment_id')!r}")
        check(r.get("running_instances") == n,
              f"scale to {n}: running_instances should be {n}, got {r.get('running_instances')!r}: {json.dumps(r)}")
        check(r.get("failed_count") == 0, f"scale to {n}: failed_count should be 0, got {json.dumps(r)}")
        check(r.get("total_instances") == len(inst) == max(n, before),
              f"scale {before} -> {n}: every instance should be reported, total_instances {r.get('total_instances')!r} = "
              f"len(instances) {len(inst)} = {max(n, before)}: {json.dumps(r)}")
        check(all(isinstance(i.get("sandbox_id"), str) and ID_RE.match(i["sandbox_id"]) and "error" not in i for i in inst),
              f"scale to {n}: every instance should have a sandbox id and no error: {inst!r}")
        running = [i["sandbox_id"] for i in inst if i.get("status") == "running"]
        gone = [i["sandbox_id"] for i in inst if i.get("status") == "terminated"]
        check(len(running) == n and len(set(running)) == n,
              f"scale to {n}: instances should hold {n} distinct running sandboxes, got {inst!r}")
        check(len(gone) == max(before - n, 0) and len(running) + len(gone) == len(inst),
              f"scale {before} -> {n}: {max(before - n, 0)} instances should be reported terminated, got {inst!r}")
        a = r.get("auto_scale")
        check(isinstance(a, dict) and a.get("enabled") is False, f"scale to {n}: auto_scale.enabled should be false, got {a!r}")
        listed = await self.running_ids(deployment_id=dep)
        check(listed == set(running),
              f"list_e2b_sandboxes(running, deployment_id={dep}) should be the {n} running instances {sorted(running)}, "
              f"got {sorted(listed)}")
        for s in gone:
            st = await self.call("get_e2b_sandbox_status", {"sandbox_id": s})
            check(st.get("status") == "stopped", f"instance {s} removed by the scale-down should be stopped, got {st.get('status')!r}")
            if s in self.created:
                self.created.remove(s)
        self.ok(f"scale_e2b_deployment {dep} {before} -> {n}: running_instances {n}, failed_count 0, all {len(inst)} "
                f"instances reported ({len(gone)} terminated and stopped), listed by deployment_id ({elapsed:.2f} s)")
        return r

    async def check_deployments(self) -> None:
        # Deploy twice: configuration as an object (setup as the user) and as a JSON string (setup as root).
        dep, first = await self.deploy(self.dep_config("user"), "an object", 1000, "/home/user")
        dep2, first2 = await self.deploy(json.dumps(self.dep_config("root")), "a JSON string", 0, "/home/user")
        check(dep2 != dep and first2 != first, "two deployments should have distinct ids and instances")

        # Scale up and down.
        r = await self.scale(dep, 3, 1)
        three = {i["sandbox_id"] for i in r["instances"] if i.get("status") == "running"}
        check(first in three, f"scaling up should keep the first instance {first}, got {sorted(three)}")
        new = sorted(three - {first})
        for s in new:
            x = await self.sh(s, "cat /home/user/out.txt; echo \"$QB_WALK\"")
            check(x.get("stdout") == f"1\nenv-{self.transport}\n",
                  f"a scaled-up instance {s} should be set up like the first (files, setup, env), got {x.get('stdout')!r}")
        self.ok(f"the scaled-up instances {new} are set up like the first")
        r = await self.scale(dep, 1, 3)
        one = [i["sandbox_id"] for i in r["instances"] if i.get("status") == "running"]
        check(one == [first], f"scaling down terminates the newest first: {first} should be left, got {one}")
        check(sorted(i["sandbox_id"] for i in r["instances"] if i.get("status") == "terminated") == new,
              f"scaling down to 1 should terminate the two newer instances {new}, got {r['instances']!r}")
        self.ok(f"scale down to 1 kept the oldest instance {first}; the two newer ones are terminated")

        # Fleet health.
        running_now = await self.running_ids()
        check(running_now == {first, first2}, f"only the two deployments' instances should run now, got {sorted(running_now)}")
        h = await self.call("monitor_e2b_health", {"include_all_sandboxes": True})
        overall, score = h.get("overall_health"), h.get("health_score")
        check(overall in ("healthy", "degraded", "unhealthy"), f"overall_health should be healthy|degraded|unhealthy, got {overall!r}")
        check(isinstance(score, (int, float)) and not isinstance(score, bool) and 0 <= score <= 100,
              f"health_score should be a number 0-100, got {score!r}")
        band = "healthy" if score >= 90 else "degraded" if score >= 70 else "unhealthy"
        check(overall == band, f"overall_health {overall!r} does not match health_score {score} (band {band})")
        for k in ("total_sandboxes", "running_sandboxes", "failed_sandboxes"):
            check(isinstance(h.get(k), int) and not isinstance(h.get(k), bool) and h[k] >= 0,
                  f"{k} should be a non-negative integer, got {h.get(k)!r}")
        check(h["running_sandboxes"] == 2 and h["total_sandboxes"] == 2,
              f"running_sandboxes and total_sandboxes should be the 2 running instances, got {h['running_sandboxes']} / {h['total_sandboxes']}")
        for k in ("average_cpu", "average_memory"):
            check(isinstance(h.get(k), (int, float)) and not isinstance(h.get(k), bool) and h[k] >= 0,
                  f"{k} should be a non-negative number while sandboxes run, got {h.get(k)!r}")
        check(isinstance(h.get("issues"), list) and all(isinstance(i, str) for i in h["issues"]),
              f"issues should be a list of strings, got {h.get('issues')!r}")
        prov = h.get("providers")
        check(isinstance(prov, dict) and isinstance(prov.get("local"), dict) and isinstance(prov["local"].get("status"), str)
              and isinstance(prov["local"].get("detail"), str),
              f"providers.local should be {{status, detail}}, got {prov!r}")
        boxes = h.get("sandboxes")
        check(isinstance(boxes, list), f"sandboxes should be a list with include_all_sandboxes, got {boxes!r}")
        by_id = {b.get("sandbox_id"): b for b in boxes}
        check(set(by_id) == {first, first2} and len(boxes) == 2,
              f"sandboxes should be the two running instances {sorted([first, first2])}, got {[b.get('sandbox_id') for b in boxes]}")
        for s, d in ((first, dep), (first2, dep2)):
            b = by_id[s]
            check(b.get("deployment_id") == d and b.get("status") == "running",
                  f"{s} should be listed running with deployment_id {d}, got {json.dumps(b)}")
            hh = b.get("health")
            check(isinstance(hh, dict) and hh.get("status") in ("healthy", "degraded", "unhealthy")
                  and isinstance(hh.get("reasons"), list), f"{s}: health should be {{status, reasons[]}}, got {hh!r}")
        healthy = sum(1 for b in boxes if b["health"]["status"] == "healthy")
        check(abs(score - 100.0 * healthy / len(boxes)) < 0.01,
              f"health_score {score} should be the share of healthy sandboxes ({healthy} of {len(boxes)})")
        h2 = await self.call("monitor_e2b_health", {})
        check("sandboxes" not in h2 or h2["sandboxes"] is None,
              f"without include_all_sandboxes there should be no sandboxes list, got {h2.get('sandboxes')!r}")
        self.ok(f"monitor_e2b_health: {overall} ({score}), {h['running_sandboxes']} running, both instances listed with "
                f"their deployment and health; providers.local {prov['local']['status']}; no list unless asked")

        # Export an instance after adding a file as root and deleting one of the template.
        gone_file = "/etc/issue"
        x = await self.call("execute_e2b_process", {"sandbox_id": first, "command": "test -f /etc/issue"})
        if x.get("exit_code") != 0:
            gone_file = "/etc/hostname"  # always written by the base template
        await self.sh(first, f"test -f {gone_file}")
        x = await self.sh(first, f"mkdir -p /opt/pysdk && echo pysdk > /opt/pysdk/marker.txt && rm {gone_file} && id -u",
                          user="root")
        check(x.get("stdout") == "0\n", f"as root, id -u should print 0, got {x.get('stdout')!r}")
        x = await self.call("execute_e2b_process", {"sandbox_id": first, "command": f"test -e {gone_file}"})
        check(x.get("exit_code") == 1, f"{gone_file} should be gone from {first} after rm, got exit {x.get('exit_code')!r}")
        self.ok(f"execute_e2b_process user=root in {first}: wrote /opt/pysdk/marker.txt, removed {gone_file} of the template")
        tname = f"pysdk-{self.transport}-{os.getpid()}"
        t0 = time.monotonic()
        r = await self.call("export_e2b_template", {"sandbox_id": first, "template_name": tname})
        elapsed = time.monotonic() - t0
        check(r.get("template_name") == tname, f"template_name should be {tname}, got {r.get('template_name')!r}")
        check(r.get("sandbox_id") == first, f"sandbox_id should be {first}, got {r.get('sandbox_id')!r}")
        check(r.get("base_template") == "base", f"base_template should be base, got {r.get('base_template')!r}")
        check(r.get("include_data") is False, f"include_data should be false (the default), got {r.get('include_data')!r}")
        check(isinstance(r.get("template_id"), str) and r["template_id"], f"template_id should be a string, got {r.get('template_id')!r}")
        size, files = r.get("size_mb"), r.get("files_count")
        check(isinstance(size, (int, float)) and not isinstance(size, bool) and size >= 0, f"size_mb should be a number, got {size!r}")
        check(isinstance(files, int) and not isinstance(files, bool) and files >= 1, f"files_count should be ≥ 1, got {files!r}")
        parse_rfc3339(r.get("exported_at"), "exported_at")
        st = await self.call("get_e2b_sandbox_status", {"sandbox_id": first})
        check(st.get("status") == "running", f"the exported sandbox should keep running, got {st.get('status')!r}")
        await self.sh(first, "test -f /opt/pysdk/marker.txt && test -f /home/user/out.txt")
        self.ok(f"export_e2b_template {first} -> {tname}: {size} MB, {files} files, base base ({elapsed:.2f} s); "
                "the sandbox still runs with its files")
        e = await self.call_err("export_e2b_template", {"sandbox_id": first, "template_name": tname})
        self.check_error(e, "already_exists", "template_name", f"a second export as {tname}")
        self.ok(f"export_e2b_template to the same name again -> already_exists: {e['message']}")

        r = await self.call("create_e2b_sandbox", {"name": f"{tname}-from", "template": tname, "memory_mb": 128,
                                                   "metadata": {"suite": f"pysdk-export-{self.transport}"}})
        fresh = r.get("sandbox_id")
        if isinstance(fresh, str):
            self.created.append(fresh)
            self.walk_sandboxes.add(fresh)
        check(r.get("status") == "running" and r.get("template") == tname,
              f"create_e2b_sandbox(template={tname}) should be running with that template, got {json.dumps(r)}")
        x = await self.sh(fresh, "cat /opt/pysdk/marker.txt")
        check(x.get("stdout") == "pysdk\n", f"/opt/pysdk/marker.txt in a sandbox of {tname} should read pysdk, got {x.get('stdout')!r}")
        x = await self.sh(fresh, f"test -e {gone_file} && echo present || echo absent")
        check(x.get("stdout") == "absent\n", f"{gone_file}, deleted before the export, should be absent from {tname}, got {x.get('stdout')!r}")
        x = await self.sh(fresh, "test -e /home/user/out.txt && echo yes || echo no")
        check(x.get("stdout") == "no\n",
              f"without include_data the home directory is not exported: /home/user/out.txt should be absent, got {x.get('stdout')!r}")
        x = await self.sh(fresh, "test -e /etc/passwd && echo yes")
        check(x.get("stdout") == "yes\n", "the rest of the base template should still be there (/etc/passwd)")
        self.ok(f"create_e2b_sandbox(template={tname}) -> {fresh}: /opt/pysdk/marker.txt reads pysdk, {gone_file} is "
                "absent, home not exported")
        r = await self.call("terminate_e2b_sandbox", {"sandbox_id": fresh})
        check(r.get("status") == "terminated", f"terminating {fresh}: status should be terminated, got {r.get('status')!r}")
        self.created.remove(fresh)
        st = await self.call("get_e2b_sandbox_status", {"sandbox_id": fresh})
        check(st.get("status") == "stopped", f"{fresh} should be stopped after terminate, got {st.get('status')!r}")
        self.ok(f"terminate_e2b_sandbox {fresh} -> terminated")

        # A failing second setup step fails the deployment and leaves nothing running.
        before = await self.running_ids()
        fail_meta = {"suite": f"pysdk-fail-{self.transport}"}
        failing = "echo to-stdout; echo to-stderr >&2; exit 7"
        e = await self.call_err("deploy_e2b_template", {
            "template_name": "base", "category": "analytics",
            "configuration": {"memory_mb": 128, "metadata": fail_meta, "setup_commands": ["echo first-ok", failing]}})
        self.check_error(e, "failed_precondition", None, "deploy whose setup_commands[1] exits 7")
        d = e.get("details")
        check(isinstance(d, dict), f"a failed setup step should come with details, got {json.dumps(e)}")
        want = {"step": "setup_commands[1]", "command": failing, "exit_code": 7, "signal": None, "timed_out": False,
                "stdout": "to-stdout\n", "stderr": "to-stderr\n"}
        got = {k: d.get(k) for k in want}
        check(got == want, f"details of the failed step should be {want}, got {json.dumps(d)}")
        check("setup_commands[1]" in e["message"] and "7" in e["message"],
              f"the message should name the failing step and its exit status, got {e['message']!r}")
        failed_sid = d.get("sandbox_id")
        check(isinstance(failed_sid, str) and ID_RE.match(failed_sid),
              f"details.sandbox_id should name the removed instance, got {failed_sid!r}")
        self.walk_sandboxes.add(failed_sid)
        st = await self.call("get_e2b_sandbox_status", {"sandbox_id": failed_sid})
        check(st.get("status") == "stopped", f"the failed instance {failed_sid} should be stopped, got {st.get('status')!r}")
        after = await self.running_ids()
        check(after == before, f"the failed deployment left running sandboxes: {sorted(after - before)}")
        left = await self.running_ids(metadata=fail_meta)
        check(not left, f"sandboxes of the failed deployment are still running: {sorted(left)}")
        r = await self.call("list_e2b_sandboxes", {"status_filter": "all", "metadata": fail_meta})
        check(all(b.get("status") != "running" for b in r.get("sandboxes", [])),
              f"list_e2b_sandboxes shows a live sandbox of the failed deployment: {r.get('sandboxes')!r}")
        self.ok(f"deploy with setup_commands[1] exiting 7 -> failed_precondition; details name the step, command, exit 7 "
                f"and its stdout/stderr; instance {failed_sid} removed, nothing left running: {e['message']}")

        # Bad input.
        unknown_dep = "dep_" + "a" * 16
        e = await self.call_err("scale_e2b_deployment", {"deployment_id": unknown_dep, "instance_count": 1})
        self.check_error(e, "not_found", None, f"scale of {unknown_dep}")
        check(unknown_dep in e["message"], f"the message should name {unknown_dep}, got {e['message']!r}")
        self.ok(f"scale_e2b_deployment {unknown_dep} -> not_found: {e['message']}")
        e = await self.call_err("scale_e2b_deployment", {"deployment_id": dep, "instance_count": -1})
        self.check_error(e, "invalid_argument", "instance_count", "scale with instance_count -1")
        check(await self.running_ids(deployment_id=dep) == {first}, "a rejected scale changed the deployment")
        self.ok(f"scale_e2b_deployment instance_count -1 -> invalid_argument, deployment unchanged: {e['message']}")
        base_args = {"template_name": "base", "category": "trading"}
        for bad, how in (([1], "a JSON array"), (5, "a number"), ("[1]", "a string holding an array")):
            e = await self.call_err("deploy_e2b_template", {**base_args, "configuration": bad})
            self.check_error(e, "invalid_argument", "configuration", f"deploy with configuration {json.dumps(bad)}")
            self.ok(f"deploy_e2b_template configuration {json.dumps(bad)} ({how}) -> invalid_argument: {e['message']}")
        e = await self.call_err("deploy_e2b_template", {"template_name": "a/b", "category": "trading"})
        self.check_error(e, "invalid_argument", "template_name", "deploy with template_name a/b")
        self.ok(f"deploy_e2b_template template_name a/b -> invalid_argument: {e['message']}")
        e = await self.call_err("export_e2b_template", {"sandbox_id": first, "template_name": "a/b"})
        self.check_error(e, "invalid_argument", "template_name", "export with template_name a/b")
        self.ok(f"export_e2b_template template_name a/b -> invalid_argument: {e['message']}")
        check(await self.running_ids() == {first, first2}, "rejected calls changed what runs")

        # Scale to 0: every instance goes; nothing of the walk runs.
        for d, f in ((dep, first), (dep2, first2)):
            r = await self.scale(d, 0, 1)
            check([i["sandbox_id"] for i in r["instances"]] == [f], f"scale {d} to 0 should terminate {f}, got {r['instances']!r}")
            self.deployments.remove(d)
        left = set()
        for d in (dep, dep2):
            left |= await self.running_ids(deployment_id=d)
            left |= await self.running_ids(metadata={"deployment_id": d})
        left |= await self.running_ids(metadata={"suite": f"pysdk-export-{self.transport}"})
        left |= await self.running_ids()
        check(not left, f"sandboxes of the deployment walk are still running: {sorted(left)}")
        check(not self.created, f"sandboxes of the walk not seen terminated: {self.created}")
        h = await self.call("monitor_e2b_health", {"include_all_sandboxes": True})
        check(h.get("running_sandboxes") == 0 and h.get("sandboxes") == [],
              f"monitor_e2b_health should see nothing running after scale 0, got running_sandboxes "
              f"{h.get('running_sandboxes')!r}, sandboxes {h.get('sandboxes')!r}")
        self.ok("scale to 0 stopped every instance; nothing of the deployment walk is running (list and health agree)")
        parents = cgroup_parent_dirs(self.cgroup_parent)
        if parents:
            cg = [str(p) for root in parents for p in root.iterdir()
                  if p.is_dir() and any(s in p.name for s in self.walk_sandboxes)]
            check(not cg, f"cgroups of the deployment walk's {len(self.walk_sandboxes)} sandboxes are left: {cg}")
            self.ok(f"no cgroup of its {len(self.walk_sandboxes)} sandboxes is left")

    async def cleanup(self) -> None:
        """Scales to 0 the deployments this walk made and did not see scaled to 0, then
        terminates (force) whatever it created and did not see terminated."""
        for dep in list(self.deployments):
            try:
                with anyio.fail_after(120):
                    await self.session.call_tool("scale_e2b_deployment", {"deployment_id": dep, "instance_count": 0},
                                                 read_timeout_seconds=120)
                self.deployments.remove(dep)
                print(f"  [{self.transport}] cleanup: scaled {dep} to 0", flush=True)
            except BaseException as e:  # noqa: BLE001 - best effort, reported
                print(f"  [{self.transport}] cleanup: could not scale {dep} to 0: {e!r}", file=sys.stderr, flush=True)
                if isinstance(e, (KeyboardInterrupt, SystemExit)):
                    raise
        for sid in list(self.created):
            try:
                with anyio.fail_after(60):
                    await self.session.call_tool("terminate_e2b_sandbox", {"sandbox_id": sid, "force": True},
                                                 read_timeout_seconds=60)
                self.created.remove(sid)
                print(f"  [{self.transport}] cleanup: terminated {sid}", flush=True)
            except BaseException as e:  # noqa: BLE001 - best effort, reported
                print(f"  [{self.transport}] cleanup: could not terminate {sid}: {e!r}", file=sys.stderr, flush=True)
                if isinstance(e, (KeyboardInterrupt, SystemExit)):
                    raise


def cgroup_parent_dirs(parent: str) -> list[Path]:
    """The directories named `parent` in the cgroup hierarchies (v1: one per controller,
    possibly below this process's own group; v2: one)."""
    found: list[Path] = []
    base = Path("/sys/fs/cgroup")
    if not base.is_dir():
        return found
    for dirpath, dirnames, _ in os.walk(base):
        depth = len(Path(dirpath).relative_to(base).parts)
        if depth >= 6:
            dirnames[:] = []
            continue
        if parent in dirnames:
            found.append(Path(dirpath) / parent)
            dirnames.remove(parent)
    return found


def remove_cgroup_parent(parent: str) -> None:
    """Removes the (empty) groups under `parent` and `parent` itself; reports what stays."""
    for root in cgroup_parent_dirs(parent):
        subs = sorted((Path(d) for d, _, _ in os.walk(root)), key=lambda p: -len(p.parts))
        for d in subs:
            try:
                d.rmdir()
            except OSError as e:
                print(f"note: could not remove cgroup {d}: {e}", file=sys.stderr)


def server_env(cgroup_parent: str) -> dict[str, str]:
    return {
        "QUANTBOX_CGROUP_PARENT": cgroup_parent,
        "QUANTBOX_LOG": os.environ.get("QUANTBOX_LOG", "info"),
        "NO_COLOR": "1",
        "RUST_BACKTRACE": "1",
    }


ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")


def tail(path: Path, n: int = 40) -> str:
    try:
        lines = ANSI_RE.sub("", path.read_text(errors="replace")).splitlines()
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join(lines[-n:])


async def walk_session(transport: str, read: Any, write: Any, cgroup_parent: str, results: dict[str, Any],
                       base_url: str | None = None) -> None:
    async with ClientSession(read, write, read_timeout_seconds=CALL_TIMEOUT_S) as session:
        with anyio.fail_after(CALL_TIMEOUT_S):
            await session.initialize()
        walk = Walk(transport, session, cgroup_parent, base_url)
        results["walk"] = walk
        try:
            with anyio.fail_after(TRANSPORT_TIMEOUT_S):
                await walk.run()
        except BaseException as e:
            results["where"] = walk.last_call
            raise e
        finally:
            with anyio.CancelScope(shield=True):
                await walk.cleanup()


async def run_stdio(exe: str, scratch: Path, cgroup_parent: str, results: dict[str, Any]) -> None:
    data = scratch / "stdio-data"
    log = scratch / "stdio-server.log"
    results["log"] = log
    params = StdioServerParameters(
        command=exe,
        args=["mcp", "--data-dir", str(data)],
        env=server_env(cgroup_parent),
        cwd=str(scratch),
    )
    with open(log, "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            await walk_session("stdio", read, write, cgroup_parent, results)


class HttpServer:
    """`quantbox serve` on 127.0.0.1:0, as a child process."""

    def __init__(self, exe: str, scratch: Path, cgroup_parent: str) -> None:
        self.data = scratch / "http-data"
        self.log = scratch / "http-server.log"
        self.stdout_lines: list[str] = []
        env = dict(os.environ)
        env.update(server_env(cgroup_parent))
        env.pop("QUANTBOX_API_KEY", None)
        env.pop("QUANTBOX_LISTEN", None)
        self._errlog = open(self.log, "w")
        self.proc = subprocess.Popen(
            [exe, "serve", "--listen", "127.0.0.1:0", "--e2b-listen", "off",
             "--data-dir", str(self.data)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._errlog,
            env=env,
            cwd=str(scratch),
            text=True,
            start_new_session=True,
        )
        self.url: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read_stdout, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout_lines.append(line.rstrip("\n"))
            if self.url is None:
                m = re.search(r"serving on (http://\S+)", line)
                if m:
                    self.url = m.group(1).rstrip("/")
                    self._ready.set()
        self._ready.set()

    def wait_ready(self) -> str:
        if not self._ready.wait(SERVER_START_TIMEOUT_S) or self.url is None:
            code = self.proc.poll()
            raise CheckFailed(
                f"`quantbox serve` did not print its URL within {SERVER_START_TIMEOUT_S:.0f} s "
                f"(exit status {code}); stdout: {self.stdout_lines}; stderr:\n{tail(self.log)}"
            )
        line = self.stdout_lines[0]
        check(re.match(r"^quantbox \S+ serving on http://127\.0\.0\.1:\d+ \(REST /api/v1, MCP /mcp, Prometheus /metrics\); data in ", line),
              f"unexpected first stdout line of `quantbox serve`: {line!r}")
        return self.url

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 20 s. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                print("  [http] server did not stop within 20 s of SIGTERM; killing it", file=sys.stderr)
                self.proc.kill()
                self.proc.wait(10)
        self._errlog.close()
        return self.proc.returncode


async def run_http(exe: str, scratch: Path, cgroup_parent: str, results: dict[str, Any]) -> None:
    server = HttpServer(exe, scratch, cgroup_parent)
    results["log"] = server.log
    try:
        base = await anyio.to_thread.run_sync(server.wait_ready)
        print(f"  [http] quantbox serve is up at {base}", flush=True)
        async with streamable_http_client(f"{base}/mcp") as (read, write):
            await walk_session("http", read, write, cgroup_parent, results, base)
    finally:
        code = server.stop()
        results["server_exit"] = code
    check(code == 0, f"`quantbox serve` should exit 0 on SIGTERM, got {code}; stderr:\n{tail(server.log)}")
    print("  [http] quantbox serve stopped cleanly on SIGTERM", flush=True)


async def sweep_leftovers(exe: str, data: Path, cgroup_parent: str, deployments: list[str]) -> None:
    """Last resort after a failure: a fresh `quantbox mcp` on the same data dir adopts what
    is still running there; scale `deployments` to 0 and force-terminate all of it."""
    if not data.is_dir():
        return
    params = StdioServerParameters(command=exe, args=["mcp", "--data-dir", str(data)], env=server_env(cgroup_parent))
    with open(data.parent / f"{data.name}-sweep.log", "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=60) as s:
                await s.initialize()
                for dep in deployments:
                    await s.call_tool("scale_e2b_deployment", {"deployment_id": dep, "instance_count": 0})
                    print(f"  sweep: scaled leftover {dep} to 0 in {data}", file=sys.stderr, flush=True)
                r = await s.call_tool("list_e2b_sandboxes", {"status_filter": "running"})
                for b in (r.structured_content or {}).get("sandboxes", []):
                    await s.call_tool("terminate_e2b_sandbox", {"sandbox_id": b["sandbox_id"], "force": True})
                    print(f"  sweep: terminated leftover {b['sandbox_id']} in {data}", file=sys.stderr, flush=True)


def describe(e: BaseException) -> str:
    # anyio task groups wrap failures in exception groups; unwrap to the first leaf.
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    if isinstance(e, CheckFailed):
        return str(e)
    if isinstance(e, TimeoutError):
        return f"timed out ({e!r})"
    # The innermost frames of each chained exception are enough to tell what broke.
    return "".join(traceback.format_exception(e, limit=-4)).rstrip()


async def main_async(exe: str, scratch: Path, transports: list[str]) -> int:
    cgroup_parent = os.environ.get("QUANTBOX_CGROUP_PARENT") or f"qbtest-pysdk-{os.getpid()}"
    print(f"MCP Python SDK (mcp {version_of('mcp')}) against {exe}; scratch {scratch}; cgroup parent {cgroup_parent}",
          flush=True)
    failures: list[str] = []
    summary: list[str] = []
    runners = {"stdio": run_stdio, "http": run_http}
    for transport in transports:
        results: dict[str, Any] = {}
        t0 = time.monotonic()
        print(f"== {transport}", flush=True)
        try:
            await runners[transport](exe, scratch, cgroup_parent, results)
            walk = results["walk"]
            summary.append(f"{transport}: {len(walk.passed)} checks passed in {time.monotonic() - t0:.1f} s")
        except BaseException as e:  # noqa: BLE001 - reported below
            if isinstance(e, KeyboardInterrupt):
                raise
            where = results.get("where")
            msg = f"{transport}: {describe(e)}"
            if where:
                msg += f"\n    last tool call: {where}"
            if results.get("log"):
                msg += f"\n    server stderr (last lines of {results['log']}):\n" + "\n".join(
                    "      " + l for l in tail(results["log"], 30).splitlines())
            failures.append(msg)
            walk = results.get("walk")
            if walk is not None and (walk.created or walk.deployments):
                try:
                    with anyio.fail_after(90):
                        await sweep_leftovers(exe, scratch / f"{transport}-data", cgroup_parent, walk.deployments)
                except BaseException as se:  # noqa: BLE001
                    print(f"  sweep of {transport} failed: {describe(se)}", file=sys.stderr)
    # A test cgroup parent is ours alone; remove it (only when empty: rmdir refuses otherwise).
    if cgroup_parent.startswith("qbtest-"):
        remove_cgroup_parent(cgroup_parent)

    print("== summary")
    for s in summary:
        print(f"  PASS {s}")
    for f in failures:
        print(f"  FAIL {f.splitlines()[0]}")
    if failures:
        print("\nFAILED:", file=sys.stderr)
        for f in failures:
            print(f"- {f}", file=sys.stderr)
        return 1
    print("all MCP Python SDK checks passed")
    return 0


def version_of(pkg: str) -> str:
    try:
        from importlib.metadata import version

        return version(pkg)
    except Exception:  # noqa: BLE001
        return "?"


def main() -> int:
    argv = sys.argv[1:]
    exe = argv[0] if len(argv) > 0 else os.environ.get("QUANTBOX_BIN")
    scratch = argv[1] if len(argv) > 1 else os.environ.get("QUANTBOX_TEST_DIR")
    if not exe or not scratch or len(argv) > 2:
        print(__doc__, file=sys.stderr)
        return 2
    exe = os.path.abspath(exe)
    if not os.access(exe, os.X_OK):
        print(f"FAIL: {exe} is not an executable", file=sys.stderr)
        return 2
    scratch_dir = Path(scratch).resolve()
    scratch_dir.mkdir(parents=True, exist_ok=True)
    # The SDK logs through `logging`; make its warnings recognisable in the output.
    logging.basicConfig(level=logging.WARNING, format="  sdk %(levelname)s %(name)s: %(message)s")
    transports = [t.strip() for t in os.environ.get("QBTEST_TRANSPORTS", "stdio,http").split(",") if t.strip()]
    bad = [t for t in transports if t not in ("stdio", "http")]
    if bad or not transports:
        print(f"FAIL: QBTEST_TRANSPORTS should be a subset of stdio,http; got {transports}", file=sys.stderr)
        return 2
    return anyio.run(main_async, exe, scratch_dir, transports)


if __name__ == "__main__":
    sys.exit(main())
