#!/usr/bin/env python3
"""quantbox through the official MCP Python SDK (mcp 2.3.0), over stdio and streamable HTTP.

Usage:
    test_mcp_sdk.py QUANTBOX_BIN SCRATCH_DIR
or with the environment variables QUANTBOX_BIN and QUANTBOX_TEST_DIR.

Optional environment: QUANTBOX_CGROUP_PARENT (default `qbtest-pysdk-<pid>`),
QBTEST_TRANSPORTS (comma-separated subset of `stdio,http`; default both).

For each transport it starts its own quantbox (`quantbox mcp` as the stdio client's
child; `quantbox serve --listen 127.0.0.1:0` as a subprocess, for HTTP), initializes an
SDK `ClientSession`, checks the tool listing and schemas, and walks one sandbox through
create, execute, list, status, bad input, terminate and terminate-again. Everything it
creates is terminated and every server it starts is stopped, also on failure.

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
}

ID_RE = re.compile(r"^[a-z0-9]{20}$")
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

    def __init__(self, transport: str, session: ClientSession, cgroup_parent: str) -> None:
        self.transport = transport
        self.session = session
        self.cgroup_parent = cgroup_parent
        self.passed: list[str] = []
        self.created: list[str] = []  # sandbox ids not yet seen terminated
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
        await self.check_bad_input(sid)
        await self.check_terminate(sid)

    async def check_tools(self) -> None:
        listing = await self.session.list_tools()
        names = [t.name for t in listing.tools]
        check(sorted(names) == sorted(EXPECTED_TOOLS) and len(names) == len(EXPECTED_TOOLS),
              f"tools/list should give exactly {sorted(EXPECTED_TOOLS)}, got {names}")
        check(listing.next_cursor is None, "tools/list should fit in one page")
        self.ok("tools/list: exactly the five sandbox tools")
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

    async def cleanup(self) -> None:
        """Terminates (force) whatever this walk created and did not see terminated."""
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


async def walk_session(transport: str, read: Any, write: Any, cgroup_parent: str, results: dict[str, Any]) -> None:
    async with ClientSession(read, write, read_timeout_seconds=CALL_TIMEOUT_S) as session:
        with anyio.fail_after(CALL_TIMEOUT_S):
            await session.initialize()
        walk = Walk(transport, session, cgroup_parent)
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
            [exe, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.data)],
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
        check(re.match(r"^quantbox \S+ serving on http://127\.0\.0\.1:\d+ \(REST /api/v1, MCP /mcp\); data in ", line),
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
            await walk_session("http", read, write, cgroup_parent, results)
    finally:
        code = server.stop()
        results["server_exit"] = code
    check(code == 0, f"`quantbox serve` should exit 0 on SIGTERM, got {code}; stderr:\n{tail(server.log)}")
    print("  [http] quantbox serve stopped cleanly on SIGTERM", flush=True)


async def sweep_leftovers(exe: str, data: Path, cgroup_parent: str) -> None:
    """Last resort after a failure: a fresh `quantbox mcp` on the same data dir adopts what
    is still running there; force-terminate all of it."""
    if not data.is_dir():
        return
    params = StdioServerParameters(command=exe, args=["mcp", "--data-dir", str(data)], env=server_env(cgroup_parent))
    with open(data.parent / f"{data.name}-sweep.log", "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=60) as s:
                await s.initialize()
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
            if walk is not None and walk.created:
                try:
                    with anyio.fail_after(90):
                        await sweep_leftovers(exe, scratch / f"{transport}-data", cgroup_parent)
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
