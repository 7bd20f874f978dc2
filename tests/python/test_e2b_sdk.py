"""quantbox through E2B's official Python SDK (e2b==2.63.0), unchanged.

Run by crates/quantbox/tests/e2b_python_sdk.rs, which starts `quantbox serve` with its E2B
API on and passes, in the environment:
  QB_E2B_URL        the E2B API of a server that accepts any key of E2B's form
  QB_REST_URL       that server's REST API (to see the sandboxes as quantbox sees them)
  QB_KEYED_E2B_URL  the E2B API of a server that accepts exactly QB_KEYED_KEY
  QB_KEYED_KEY      that key
The SDK is pointed at QB_E2B_URL by E2B_API_URL and E2B_SANDBOX_URL, as a user would.

Every check prints PASS or FAIL; any failure exits 1.
"""

import asyncio
import base64
import os
import sys
import time
import traceback
import uuid

import httpx

E2B_URL = os.environ["QB_E2B_URL"]
REST_URL = os.environ["QB_REST_URL"]
KEYED_URL = os.environ["QB_KEYED_E2B_URL"]
KEYED_KEY = os.environ["QB_KEYED_KEY"]
KEY = "e2b_53ae1fed82754c17ad8077fbc8bcdd90"

os.environ["E2B_API_KEY"] = KEY
os.environ["E2B_API_URL"] = E2B_URL
os.environ["E2B_SANDBOX_URL"] = E2B_URL
os.environ.pop("E2B_DEBUG", None)
os.environ.pop("E2B_DOMAIN", None)

import e2b  # noqa: E402  (after the environment is set)
from e2b import (  # noqa: E402
    AsyncSandbox,
    AuthenticationException,
    CommandExitException,
    ConnectionConfig,
    NotFoundException,
    Sandbox,
    SandboxNotFoundException,
    SandboxQuery,
    SandboxState,
)

FAILED = []
PASSED = []
RUN = uuid.uuid4().hex[:12]
MADE = []


def check(name):
    def wrap(f):
        t = time.monotonic()
        try:
            f()
            PASSED.append(name)
            print(f"PASS {name} ({(time.monotonic() - t) * 1000:.0f} ms)", flush=True)
        except Exception:
            FAILED.append(name)
            print(f"FAIL {name}", flush=True)
            traceback.print_exc()
            sys.stdout.flush()
        return f

    return wrap


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def raises(exc_type, f):
    try:
        f()
    except exc_type as e:
        return e
    except Exception as e:  # the wrong exception is a failure with its type shown
        raise AssertionError(f"expected {exc_type.__name__}, got {type(e).__name__}: {e}")
    raise AssertionError(f"expected {exc_type.__name__}, nothing was raised")


def new_sandbox(**kw):
    sb = Sandbox.create(**kw)
    MADE.append(sb)
    return sb


def rest_tool(name, args):
    r = httpx.post(f"{REST_URL}/api/v1/tools/{name}", json=args, timeout=30)
    r.raise_for_status()
    return r.json()


print(f"e2b {e2b.__version__ if hasattr(e2b, '__version__') else '?'}; API and envd at {E2B_URL}")


@check("the SDK honours E2B_API_URL and E2B_SANDBOX_URL (fails if a future SDK drops them)")
def _():
    cfg = ConnectionConfig()
    expect(cfg.api_url == E2B_URL, f"api_url is {cfg.api_url!r}, not E2B_API_URL {E2B_URL!r}")
    expect(
        cfg.get_sandbox_url("x" * 20, "e2b.app") == E2B_URL,
        f"sandbox url is {cfg.get_sandbox_url('x' * 20, 'e2b.app')!r}, not E2B_SANDBOX_URL",
    )


sb = None


@check("create: metadata, env vars and timeout; an ordinary quantbox sandbox")
def _():
    global sb
    sb = new_sandbox(timeout=120, metadata={"suite": RUN, "role": "main"}, envs={"GREETING": "bonjour"})
    expect(len(sb.sandbox_id) == 20 and sb.sandbox_id.isalnum(), f"sandbox id {sb.sandbox_id!r}")
    info = sb.get_info()
    expect(info.state == SandboxState.RUNNING, f"state {info.state}")
    expect(info.metadata.get("suite") == RUN, f"metadata {info.metadata}")
    left = (info.end_at - info.started_at).total_seconds()
    expect(118 <= left <= 122, f"endAt - startedAt = {left} s, want 120")
    expect(sb.is_running(), "is_running() is False")
    # quantbox's own tools see it, with the same metadata.
    listed = rest_tool("list_e2b_sandboxes", {})["sandboxes"]
    mine = [s for s in listed if s["sandbox_id"] == sb.sandbox_id]
    expect(len(mine) == 1, f"{sb.sandbox_id} not in list_e2b_sandboxes")
    expect(mine[0]["metadata"].get("role") == "main", f"metadata there: {mine[0]['metadata']}")
    status = rest_tool("get_e2b_sandbox_status", {"sandbox_id": sb.sandbox_id})
    expect(status["status"] == "running", f"status {status['status']}")
    health = rest_tool("monitor_e2b_health", {"include_all_sandboxes": True})
    ids = [s["sandbox_id"] for s in health.get("sandboxes", [])]
    expect(sb.sandbox_id in ids, f"not in the fleet's health: {ids}")
    # The sampler reads it within a second or two; then the metrics show it.
    deadline = time.monotonic() + 5
    seen = []
    while time.monotonic() < deadline:
        m = rest_tool("get_system_metrics", {"metrics": ["sandboxes"]})
        seen = [s["sandbox_id"] for s in m["metrics"]["sandboxes"]["per_sandbox"]]
        if sb.sandbox_id in seen:
            break
        time.sleep(0.3)
    expect(sb.sandbox_id in seen, f"not in get_system_metrics: {seen}")


@check("commands.run: stdout, stderr, exit code, env vars, cwd, user")
def _():
    r = sb.commands.run("echo hi; echo err >&2; echo $GREETING $EXTRA", envs={"EXTRA": "x1"})
    expect(r.exit_code == 0, f"exit {r.exit_code}")
    expect(r.stdout == "hi\nbonjour x1\n", f"stdout {r.stdout!r}")
    expect(r.stderr == "err\n", f"stderr {r.stderr!r}")
    expect(sb.commands.run("pwd", cwd="/tmp").stdout == "/tmp\n", "cwd")
    expect(sb.commands.run("pwd").stdout == "/home/user\n", "default cwd is the home")
    expect(sb.commands.run("id -un").stdout == "user\n", "default user")
    expect(sb.commands.run("id -u", user="root").stdout == "0\n", "root")


@check("commands.run streams output as it comes")
def _():
    seen = []
    t0 = time.monotonic()
    r = sb.commands.run(
        # Two pipes: their relative order is only certain with time between the writes.
        "echo first; sleep 1.5; echo second >&2; sleep 0.3; echo third",
        on_stdout=lambda s: seen.append(("out", s, time.monotonic() - t0)),
        on_stderr=lambda s: seen.append(("err", s, time.monotonic() - t0)),
    )
    total = time.monotonic() - t0
    kinds = [(k, s) for k, s, _ in seen]
    expect(kinds == [("out", "first\n"), ("err", "second\n"), ("out", "third\n")], f"callbacks {kinds}")
    first_at = seen[0][2]
    expect(total - first_at >= 1.2, f"first chunk at {first_at:.2f} s of {total:.2f} s: not streamed")
    expect(r.stdout == "first\nthird\n", r.stdout)


@check("a non-zero exit raises CommandExitException with the output")
def _():
    e = raises(CommandExitException, lambda: sb.commands.run("echo out; echo bad >&2; exit 3"))
    expect(e.exit_code == 3, f"exit {e.exit_code}")
    expect(e.stdout == "out\n" and e.stderr == "bad\n", f"{e.stdout!r} {e.stderr!r}")


@check("a background command is re-attached by pid after its stream's deadline passed (E2B #1074)")
def _():
    h = sb.commands.run(
        "for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.5; done",
        background=True,
        timeout=1,  # the starting stream ends after 1 s
    )
    pid = h.pid
    time.sleep(1.8)
    listed = [p.pid for p in sb.commands.list()]
    expect(pid in listed, f"pid {pid} not in commands.list() {listed}")
    again = sb.commands.connect(pid, timeout=30)
    r = again.wait()
    expect(r.exit_code == 0, f"exit {r.exit_code}")
    expect("tick 6\n" in r.stdout, f"re-attached output {r.stdout!r}")
    expect("tick 1\n" not in r.stdout, f"re-attached output replays old lines: {r.stdout!r}")
    expect(pid not in [p.pid for p in sb.commands.list()], "ended process still listed")
    raises(NotFoundException, lambda: sb.commands.connect(pid))


@check("stdin, list with cmd and args, kill")
def _():
    h = sb.commands.run("cat", background=True, stdin=True)
    sb.commands.send_stdin(h.pid, "line one\n")
    sb.commands.send_stdin(h.pid, "line two\n")
    sb.commands.close_stdin(h.pid)
    r = h.wait()
    expect(r.stdout == "line one\nline two\n", f"cat echoed {r.stdout!r}")
    h = sb.commands.run("sleep 30", background=True)
    procs = {p.pid: p for p in sb.commands.list()}
    expect(h.pid in procs, f"{h.pid} not listed")
    expect(procs[h.pid].cmd == "/bin/bash" and procs[h.pid].args[-1] == "sleep 30", f"{procs[h.pid]}")
    expect(sb.commands.kill(h.pid) is True, "kill returned False")
    e = raises(CommandExitException, h.wait)
    expect(e.exit_code != 0, f"exit {e.exit_code}")
    expect(sb.commands.kill(h.pid) is False, "killing an ended process returned True")


@check("pty: an interactive shell on a terminal, resized, its exit code")
def _():
    from e2b import PtySize

    h = sb.pty.create(PtySize(rows=24, cols=80))
    sb.pty.send_stdin(h.pid, b"stty size; [ -t 0 ] && echo on-a-tty\n")
    time.sleep(0.5)
    expect(sb.pty.resize(h.pid, PtySize(rows=40, cols=120)) is None, "resize")
    sb.pty.send_stdin(h.pid, b"stty size; exit 5\n")
    out = []
    e = raises(CommandExitException, lambda: h.wait(on_pty=lambda d: out.append(bytes(d))))
    expect(e.exit_code == 5, f"exit {e.exit_code}")
    screen = b"".join(out).decode(errors="replace")
    expect("24 80\r\n" in screen and "on-a-tty\r\n" in screen, f"before resize: {screen!r}")
    expect("40 120\r\n" in screen, f"after resize: {screen!r}")


@check("files: write, read (text and bytes), list, exists, info, rename, make_dir, remove")
def _():
    info = sb.files.write("notes/a.txt", "hello file\n")
    expect(info.path == "/home/user/notes/a.txt", f"written to {info.path}")
    expect(sb.files.read("notes/a.txt") == "hello file\n", "text round trip")
    blob = bytes(range(256)) * 4096 + os.urandom(1000)  # 1 MiB and more, every byte value
    sb.files.write("/home/user/notes/blob.bin", blob)
    back = sb.files.read("/home/user/notes/blob.bin", format="bytes")
    expect(bytes(back) == blob, f"bytes round trip: {len(back)} of {len(blob)}")
    names = sorted(e.name for e in sb.files.list("notes"))
    expect(names == ["a.txt", "blob.bin"], f"list {names}")
    expect(sb.files.exists("notes/a.txt") and not sb.files.exists("notes/none"), "exists")
    st = sb.files.get_info("notes/blob.bin")
    expect(st.size == len(blob), f"size {st.size}")
    expect(sb.commands.run("cat notes/a.txt").stdout == "hello file\n", "a command sees the file")
    sb.files.rename("notes/a.txt", "notes/b.txt")
    expect(not sb.files.exists("notes/a.txt") and sb.files.exists("notes/b.txt"), "rename")
    expect(sb.files.make_dir("made/deep") is True, "make_dir")
    expect(sb.files.make_dir("made/deep") is False, "make_dir of an existing dir")
    sb.files.remove("notes/b.txt")
    expect(not sb.files.exists("notes/b.txt"), "remove")
    raises(NotFoundException, lambda: sb.files.read("notes/b.txt"))
    # Files are read inside the sandbox: its /etc/hostname, not the host's.
    inside = sb.files.read("/etc/hostname").strip()
    with open("/etc/hostname") as f:
        host = f.read().strip()
    expect(inside != host, f"/etc/hostname read from the host ({host!r})")


@check("files.watch_dir sees files made afterwards")
def _():
    sb.files.make_dir("watched")
    w = sb.files.watch_dir("watched")
    sb.commands.run("echo x > watched/new.txt")
    events = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(e.name == "new.txt" for e in events):
        events += w.get_new_events()
        time.sleep(0.2)
    w.stop()
    expect(any(e.name == "new.txt" for e in events), f"events {events}")


@check("async SDK: streamed watch_dir and commands")
def _():
    async def go():
        asb = await AsyncSandbox.connect(sb.sandbox_id)
        got = []
        done = asyncio.Event()

        def on_event(e):
            got.append(e)
            if e.name == "async.txt":
                done.set()

        await asb.files.make_dir("awatched")
        h = await asb.files.watch_dir("awatched", on_event=on_event)
        await asb.commands.run("echo y > awatched/async.txt")
        await asyncio.wait_for(done.wait(), 10)
        await h.stop()
        r = await asb.commands.run("echo async-ok")
        return got, r.stdout

    got, out = asyncio.run(go())
    expect(any(e.name == "async.txt" for e in got), f"events {got}")
    expect(out == "async-ok\n", out)


@check("set_timeout moves endAt (shorter and longer)")
def _():
    sb.set_timeout(30)
    info = sb.get_info()
    left = (info.end_at.timestamp() - time.time())
    expect(25 <= left <= 31, f"{left} s left after set_timeout(30)")
    sb.set_timeout(200)
    left = (sb.get_info().end_at.timestamp() - time.time())
    expect(195 <= left <= 201, f"{left} s left after set_timeout(200)")


@check("Sandbox.list: metadata filter and paging")
def _():
    extra = [new_sandbox(timeout=120, metadata={"suite": RUN, "role": f"page{i}"}) for i in range(2)]
    want = {sb.sandbox_id} | {s.sandbox_id for s in extra}
    pager = Sandbox.list(query=SandboxQuery(metadata={"suite": RUN}), limit=1)
    seen, pages = [], 0
    while pager.has_next:
        items = pager.next_items()
        pages += 1
        expect(len(items) <= 1, f"page of {len(items)} with limit=1")
        seen += [i.sandbox_id for i in items]
        expect(pages <= 5, "paging does not end")
    expect(sorted(seen) == sorted(want), f"listed {seen}, want {want}")
    one = Sandbox.list(query=SandboxQuery(metadata={"suite": RUN, "role": "page1"})).next_items()
    expect([i.sandbox_id for i in one] == [extra[1].sandbox_id], f"filter by two keys: {one}")
    none = Sandbox.list(query=SandboxQuery(metadata={"suite": "no-such-" + RUN})).next_items()
    expect(none == [], f"unmatched filter listed {none}")
    for s in extra:
        s.kill()


@check("get_metrics: the sandbox's CPU and memory")
def _():
    sb.commands.run("timeout 6 sh -c 'while :; do :; done' || true", timeout=30)
    deadline = time.monotonic() + 15
    metrics = []
    while time.monotonic() < deadline:
        metrics = sb.get_metrics()
        if metrics and max(m.cpu_used_pct for m in metrics) > 30:
            break
        time.sleep(1)
    expect(metrics, "no metrics")
    m = metrics[-1]
    expect(m.mem_total > 0 and m.cpu_count >= 1, f"{m}")
    expect(max(x.cpu_used_pct for x in metrics) > 30, f"cpu {[x.cpu_used_pct for x in metrics]}")


@check("pause, then connect resumes it with its files")
def _():
    sb.files.write("kept.txt", "still here")
    sb.pause()
    expect(sb.get_info().state == SandboxState.PAUSED, "not paused")
    again = Sandbox.connect(sb.sandbox_id)
    expect(again.get_info().state == SandboxState.RUNNING, "not running after connect")
    expect(again.files.read("kept.txt") == "still here", "file lost over pause")
    expect(again.commands.run("echo back").stdout == "back\n", "commands after resume")


@check("another sandbox's access token is refused by envd")
def _():
    other = new_sandbox(timeout=60)
    body = {"process": {"cmd": "/bin/true"}}

    def list_with(token):
        return httpx.post(
            f"{E2B_URL}/process.Process/List",
            headers={
                "E2b-Sandbox-Id": sb.sandbox_id,
                "E2b-Sandbox-Port": "49983",
                "X-Access-Token": token,
                "Content-Type": "application/json",
                "Connect-Protocol-Version": "1",
            },
            json={},
        )

    own = list_with(sb._envd_access_token)
    expect(own.status_code == 200, f"own token: {own.status_code} {own.text}")
    foreign = list_with(other._envd_access_token)
    expect(foreign.status_code == 401, f"other sandbox's token: {foreign.status_code} {foreign.text}")
    expect(sb._envd_access_token != other._envd_access_token, "two sandboxes share a token")
    del body
    other.kill()


@check("unknown sandbox: the SDK's not-found errors")
def _():
    ghost = "a" * 20
    raises(SandboxNotFoundException, lambda: Sandbox.connect(ghost))
    raises(NotFoundException, lambda: Sandbox.get_info(ghost))
    expect(Sandbox.kill(ghost) is False, "kill of an unknown sandbox returned True")


@check("wrong API key: AuthenticationException")
def _():
    raises(AuthenticationException, lambda: Sandbox.create(api_key="e2b_" + "0" * 40, api_url=KEYED_URL))
    raises(AuthenticationException, lambda: Sandbox.list(api_key="e2b_" + "1" * 40, api_url=KEYED_URL).next_items())
    raises(AuthenticationException, lambda: Sandbox.create(api_key="not-an-e2b-key"))
    ok = Sandbox.create(api_key=KEYED_KEY, api_url=KEYED_URL, sandbox_url=KEYED_URL, timeout=30)
    expect(ok.commands.run("echo keyed").stdout == "keyed\n", "the right key works")
    ok.kill()


@check("kill: gone for the SDK and for quantbox")
def _():
    sid = sb.sandbox_id
    sb.kill()
    raises(NotFoundException, lambda: Sandbox.get_info(sid))
    expect(not sb.is_running(), "is_running() after kill")
    expect(Sandbox.kill(sid) is False, "second kill returned True")
    status = rest_tool("get_e2b_sandbox_status", {"sandbox_id": sid})
    expect(status["status"] == "stopped", f"quantbox status {status['status']}")


for s in MADE:
    try:
        s.kill()
    except Exception:
        pass

print(f"\n{len(PASSED)} passed, {len(FAILED)} failed")
if FAILED:
    print("failed: " + "; ".join(FAILED))
    sys.exit(1)
