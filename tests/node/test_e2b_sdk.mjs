// quantbox's E2B API through E2B's official JavaScript SDK (npm `e2b`, pinned in
// package.json / package-lock.json): control plane and envd, as a user of the SDK sees them.
//
// Plain Node, no test framework: every check prints PASS or FAIL with its details and its
// time, a summary line closes the run, and the exit status is 1 when any check failed.
// Checks run in order and share two sandboxes; a check whose sandbox could not be made
// fails (it does not pass by being skipped). Every sandbox made here is killed at the end.
//
// Environment:
//   E2B_API_KEY      a key the server accepts
//   E2B_API_URL      the server's E2B API (control plane) ...
//   E2B_SANDBOX_URL  ... and its envd URL (quantbox serves both on one port)
//   QB_REST_URL      quantbox's own REST API of the same server (to see, independently of
//                    the SDK, that the SDK's traffic reached quantbox's sandboxes)
//   QB_WRONG_API_KEY optional: a well-formed key the server must refuse (the server then
//                    accepts only E2B_API_KEY)
// The SDK is resolved from the working directory's node_modules (or NODE_PATH): run
// `npm ci` here and `node test_e2b_sdk.mjs`, or run it from a directory that holds the
// installed modules, as crates/quantbox/tests/e2b_node_sdk.rs does.

import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import path from 'node:path'
import { inspect } from 'node:util'

const PINNED = '2.51.0'
const require = createRequire(path.join(process.cwd(), 'package.json'))
const e2b = require('e2b')
const {
  Sandbox,
  CommandExitError,
  SandboxError,
  NotFoundError,
  SandboxNotFoundError,
  FileNotFoundError,
  AuthenticationError,
  TimeoutError,
  FileType,
} = e2b

const env = (name) => {
  const v = process.env[name]
  if (!v) {
    console.error(`set ${name}`)
    process.exit(2)
  }
  return v.replace(/\/+$/, '')
}
const API_KEY = env('E2B_API_KEY')
const API_URL = env('E2B_API_URL')
const SANDBOX_URL = env('E2B_SANDBOX_URL')
const REST_URL = env('QB_REST_URL')
const WRONG_KEY = process.env.QB_WRONG_API_KEY || null

// ---------------------------------------------------------------- the harness

const results = []
const made = new Set() // ids of sandboxes made here, killed at the end
const state = {} // shared between checks: the sandboxes `a` and `b`
const RUN = randomBytes(6).toString('hex') // tells this run's sandboxes apart

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const show = (v) => inspect(v, { depth: 4, breakLength: 120 })

async function check(name, fn, { timeoutMs = 60_000 } = {}) {
  const t0 = performance.now()
  let timer
  const notes = []
  try {
    await Promise.race([
      fn((line) => notes.push(line)),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`check timed out after ${timeoutMs} ms`)), timeoutMs)
      }),
    ])
    const ms = Math.round(performance.now() - t0)
    results.push({ name, ok: true, ms })
    console.log(`PASS ${name} (${ms} ms)`)
    for (const line of notes.join('\n').split('\n').filter(Boolean)) console.log(`     ${line}`)
  } catch (e) {
    const ms = Math.round(performance.now() - t0)
    results.push({ name, ok: false, ms })
    const detail = (e && e.stack) || show(e)
    console.log(`FAIL ${name} (${ms} ms)`)
    for (const line of [...notes, String(detail)].join('\n').split('\n')) console.log(`     ${line}`)
  } finally {
    clearTimeout(timer)
  }
}

/** Awaits `promise`, which must reject with an instance of `cls`; returns the error. */
async function rejectsWith(promise, cls, what) {
  let value
  try {
    value = await promise
  } catch (e) {
    if (!(e instanceof cls)) {
      throw new assert.AssertionError({
        message: `${what}: expected ${cls.name}, got ${e?.constructor?.name}: ${e?.message}\n${e?.stack}`,
      })
    }
    return e
  }
  throw new assert.AssertionError({ message: `${what}: expected ${cls.name}, but it succeeded with ${show(value)}` })
}

function need(key) {
  const sb = state[key]
  if (!sb) throw new Error(`needs sandbox ${key.toUpperCase()}, which was not created (see the create check above)`)
  return sb
}

/** Polls `f` until it returns a truthy value, at most `ms`; returns the last value. */
async function until(ms, f, every = 200) {
  const end = Date.now() + ms
  let v
  for (;;) {
    v = await f()
    if (v || Date.now() > end) return v
    await sleep(every)
  }
}

/** quantbox's own REST API. */
async function rest(method, p, body) {
  const r = await fetch(`${REST_URL}${p}`, {
    method,
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  })
  const text = await r.text()
  let json = null
  try {
    json = JSON.parse(text)
  } catch {}
  return { status: r.status, json, text }
}

/** A unary Connect call to envd with raw fetch, as a client without the SDK makes it. */
async function envdUnary(route, { sandboxId, token }, body = {}) {
  const headers = {
    'Content-Type': 'application/json',
    'Connect-Protocol-Version': '1',
    'E2b-Sandbox-Id': sandboxId,
    'E2b-Sandbox-Port': '49983',
  }
  if (token !== undefined) headers['X-Access-Token'] = token
  const r = await fetch(`${SANDBOX_URL}/${route}`, { method: 'POST', headers, body: JSON.stringify(body) })
  const text = await r.text()
  let json = null
  try {
    json = JSON.parse(text)
  } catch {}
  return { status: r.status, json, text }
}

const randomId = () => {
  const abc = 'abcdefghijklmnopqrstuvwxyz0123456789'
  return [...randomBytes(20)].map((b) => abc[b % abc.length]).join('')
}

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex')

// ---------------------------------------------------------------- the checks

console.log(`E2B JS SDK against ${API_URL} (envd ${SANDBOX_URL}); run ${RUN}`)

await check('the installed SDK is the pinned e2b@' + PINNED, async (note) => {
  const pkg = require('e2b/package.json')
  note(`loaded ${require.resolve('e2b')}`)
  assert.equal(pkg.version, PINNED, 'the e2b package that got loaded')
})

await check('Sandbox.create with metadata, envs and timeoutMs', async (note) => {
  const t0 = Date.now()
  const a = await Sandbox.create({
    timeoutMs: 180_000,
    metadata: { suite: 'qb-node-sdk', run: RUN, which: 'a' },
    envs: { QB_GREETING: 'hello from create', QB_SECOND: 'two words' },
  })
  made.add(a.sandboxId)
  state.a = a
  note(`sandbox A ${a.sandboxId} in ${Date.now() - t0} ms`)
  assert.match(a.sandboxId, /^[a-z0-9]{20}$/, 'an E2B-style sandbox id')
  const info = await a.getInfo()
  assert.equal(info.sandboxId, a.sandboxId)
  assert.deepEqual(info.metadata, { suite: 'qb-node-sdk', run: RUN, which: 'a' }, 'metadata as given')
  assert.equal(info.state, 'running')
  const lifetime = (info.endAt.getTime() - Date.now()) / 1000
  assert.ok(lifetime > 150 && lifetime <= 181, `endAt is about 180 s ahead, got ${lifetime} s`)

  const b = await Sandbox.create({ timeoutMs: 180_000, metadata: { suite: 'qb-node-sdk', run: RUN, which: 'b' } })
  made.add(b.sandboxId)
  state.b = b
  note(`sandbox B ${b.sandboxId}`)
  assert.notEqual(b.sandboxId, a.sandboxId)
})

await check("the create envs are in every command's environment", async () => {
  const a = need('a')
  const r = await a.commands.run('printf "%s|%s" "$QB_GREETING" "$QB_SECOND"')
  assert.equal(r.exitCode, 0)
  assert.equal(r.stdout, 'hello from create|two words', 'the create envs, in a command run through envd')
  const root = await a.commands.run('printf "%s" "$QB_GREETING"', { user: 'root' })
  assert.equal(root.stdout, 'hello from create', "and in root's commands")
  const b = need('b')
  const other = await b.commands.run('printf "[%s]" "$QB_GREETING"')
  assert.equal(other.stdout, '[]', "not in another sandbox's commands")
})

await check('the SDK uses E2B_API_URL and E2B_SANDBOX_URL, and its traffic reaches quantbox', async (note) => {
  const a = need('a')
  // What the SDK says it is connected to (fails when a future SDK drops the variables).
  assert.equal(a.connectionConfig.apiUrl.replace(/\/+$/, ''), API_URL, 'connectionConfig.apiUrl')
  assert.equal((a.connectionConfig.sandboxUrl || '').replace(/\/+$/, ''), SANDBOX_URL, 'connectionConfig.sandboxUrl')
  assert.equal(String(a.envdApiUrl).replace(/\/+$/, ''), SANDBOX_URL, "the sandbox's envd URL")
  // The control plane that the SDK's create reached knows the sandbox.
  const r = await fetch(`${API_URL}/v2/sandboxes`, { headers: { 'X-API-Key': API_KEY } })
  assert.equal(r.status, 200, `GET /v2/sandboxes: ${r.status}`)
  const listed = await r.json()
  assert.ok(
    listed.some((s) => s.sandboxID === a.sandboxId),
    `GET /v2/sandboxes lists ${a.sandboxId}: ${show(listed.map((s) => s.sandboxID))}`,
  )
  // The envd that the SDK's commands reached is quantbox's sandbox: a nonce written by an
  // SDK command is read back through quantbox's own REST API, and the other way round.
  const nonce = randomBytes(12).toString('hex')
  await a.commands.run(`echo ${nonce} > /tmp/qb-sdk-nonce`)
  const viaRest = await rest('POST', `/api/v1/sandboxes/${a.sandboxId}/exec`, { command: 'cat /tmp/qb-sdk-nonce' })
  assert.equal(viaRest.status, 200, `REST exec: ${viaRest.text}`)
  assert.equal(viaRest.json.stdout, `${nonce}\n`, 'REST reads what the SDK command wrote')
  const back = randomBytes(12).toString('hex')
  const w = await rest('POST', `/api/v1/sandboxes/${a.sandboxId}/exec`, { command: `echo ${back} > /tmp/qb-rest-nonce` })
  assert.equal(w.status, 200, `REST exec: ${w.text}`)
  assert.equal((await a.commands.run('cat /tmp/qb-rest-nonce')).stdout, `${back}\n`, 'the SDK reads what REST wrote')
  note(`API ${a.connectionConfig.apiUrl}, envd ${a.envdApiUrl}`)
})

await check('commands.run streams stdout and stderr to the callbacks', async (note) => {
  const a = need('a')
  const out = []
  const err = []
  const t0 = performance.now()
  const r = await a.commands.run('for i in 1 2 3 4; do echo out$i; echo err$i >&2; sleep 0.4; done', {
    onStdout: (d) => out.push({ d, at: performance.now() - t0 }),
    onStderr: (d) => err.push({ d, at: performance.now() - t0 }),
  })
  const total = performance.now() - t0
  assert.equal(r.exitCode, 0)
  assert.equal(r.stdout, 'out1\nout2\nout3\nout4\n')
  assert.equal(r.stderr, 'err1\nerr2\nerr3\nerr4\n')
  assert.equal(out.map((c) => c.d).join(''), r.stdout, 'the stdout callback saw all of stdout')
  assert.equal(err.map((c) => c.d).join(''), r.stderr, 'the stderr callback saw all of stderr')
  // Streamed, not delivered at the end: the first line came well before the command ended.
  assert.ok(out.length >= 2, `stdout came in ${out.length} chunk(s)`)
  assert.ok(out[0].at < total - 800, `first stdout chunk at ${Math.round(out[0].at)} ms of ${Math.round(total)} ms`)
  assert.ok(err[0].at < total - 800, `first stderr chunk at ${Math.round(err[0].at)} ms of ${Math.round(total)} ms`)
  note(`${out.length} stdout and ${err.length} stderr chunks; first at ${Math.round(out[0].at)} ms of ${Math.round(total)} ms`)
})

await check('commands.run with envs, cwd and user', async () => {
  const a = need('a')
  const r = await a.commands.run('echo "$QB_X|$(pwd)|$(id -un)|$HOME"', { envs: { QB_X: 'per-command' }, cwd: '/tmp' })
  assert.equal(r.stdout, 'per-command|/tmp|user|/home/user\n', 'default user is `user`')
  const root = await a.commands.run('echo "$(id -u)|$(pwd)"', { user: 'root' })
  assert.equal(root.stdout, '0|/root\n', 'user root, in its home')
  // The per-command envs override the sandbox's.
  const o = await a.commands.run('echo "$QB_GREETING"', { envs: { QB_GREETING: 'overridden' } })
  assert.equal(o.stdout, 'overridden\n')
})

await check('a non-zero exit rejects with CommandExitError (exitCode, stdout, stderr)', async () => {
  const a = need('a')
  const e = await rejectsWith(a.commands.run('echo partial; echo broken >&2; exit 3'), CommandExitError, 'exit 3')
  assert.ok(e instanceof SandboxError, 'CommandExitError is a SandboxError')
  assert.equal(e.exitCode, 3)
  assert.equal(e.stdout, 'partial\n')
  assert.equal(e.stderr, 'broken\n')
  const e2 = await rejectsWith(a.commands.run('kill -TERM $$'), CommandExitError, 'killed by a signal')
  assert.notEqual(e2.exitCode, 0, `a command killed by a signal has a non-zero exit code, got ${e2.exitCode}`)
})

await check('a command past its timeoutMs rejects with TimeoutError', async (note) => {
  const a = need('a')
  const t0 = Date.now()
  const e = await rejectsWith(a.commands.run('sleep 30', { timeoutMs: 1500 }), TimeoutError, 'sleep 30 with timeoutMs 1500')
  const ms = Date.now() - t0
  assert.ok(ms >= 1400 && ms < 10_000, `rejected after ${ms} ms`)
  note(`${ms} ms: ${e.message.split('\n')[0].slice(0, 100)}`)
})

await check('a background command is listed, and re-attached by pid gives its output and exit', async (note) => {
  const a = need('a')
  const first = []
  const h = await a.commands.run('for i in 1 2 3 4 5 6; do echo tick$i; sleep 0.5; done; echo bye >&2; exit 4', {
    background: true,
    onStdout: (d) => first.push(d),
  })
  assert.ok(Number.isInteger(h.pid) && h.pid > 0, `pid ${h.pid}`)
  const listed = await a.commands.list()
  const p = listed.find((x) => x.pid === h.pid)
  assert.ok(p, `commands.list() has pid ${h.pid}: ${show(listed)}`)
  assert.ok([p.cmd, ...p.args].join(' ').includes('tick$i'), `its command line: ${show(p)}`)
  await sleep(700)
  await h.disconnect()
  const again = []
  const h2 = await a.commands.connect(h.pid, { onStdout: (d) => again.push(d), timeoutMs: 30_000 })
  assert.equal(h2.pid, h.pid)
  const e = await rejectsWith(h2.wait(), CommandExitError, 'the re-attached command exits 4')
  assert.equal(e.exitCode, 4)
  assert.match(h2.stdout, /tick6\n$/, 'output after re-attaching')
  assert.equal(again.join(''), h2.stdout, 'the new callback saw the output')
  assert.equal(e.stderr, 'bye\n')
  assert.ok(first.join('').startsWith('tick1\n'), `the first handle saw the start: ${show(first)}`)
  const after = await a.commands.list()
  assert.ok(!after.some((x) => x.pid === h.pid), `ended command no longer listed: ${show(after)}`)
  note(`pid ${h.pid}; before disconnect ${show(first.join(''))}, after ${show(h2.stdout)}`)
})

await check('commands.kill ends a background command; stdin reaches one started with stdin', async () => {
  const a = need('a')
  const h = await a.commands.run('sleep 120', { background: true })
  assert.equal(await a.commands.kill(h.pid), true, 'kill of a running command')
  const e = await rejectsWith(h.wait(), CommandExitError, 'a killed command')
  assert.notEqual(e.exitCode, 0)
  assert.equal(await a.commands.kill(h.pid), false, 'kill of a command that is gone')

  const cat = await a.commands.run('cat; echo done', { background: true, stdin: true })
  await cat.sendStdin('line one\n')
  await a.commands.sendStdin(cat.pid, 'line two\n')
  await cat.closeStdin()
  const r = await cat.wait()
  assert.equal(r.stdout, 'line one\nline two\ndone\n')
})

await check('files.write and files.read: text round trip', async () => {
  const a = need('a')
  const text = 'héllo wörld ✓\nsecond line\n'
  const w = await a.files.write('/home/user/qb/hello.txt', text)
  assert.equal(w.path, '/home/user/qb/hello.txt')
  assert.equal(w.name, 'hello.txt')
  assert.equal(await a.files.read('/home/user/qb/hello.txt'), text)
  // The file is really in the sandbox, with its bytes and owner.
  const r = await a.commands.run('cat /home/user/qb/hello.txt; stat -c %U /home/user/qb/hello.txt')
  assert.equal(r.stdout, text + 'user\n')
  // A relative path is under the user's home; a write replaces the content.
  const rel = await a.files.write('relative.txt', 'first version, longer')
  assert.equal(rel.path, '/home/user/relative.txt')
  await a.files.write('relative.txt', 'v2')
  assert.equal(await a.files.read('/home/user/relative.txt'), 'v2')
  // A file a command wrote is read.
  await a.commands.run('printf "from a command" > /tmp/cmd.txt')
  assert.equal(await a.files.read('/tmp/cmd.txt'), 'from a command')
})

await check('files.write and files.read: binary bytes round trip', async (note) => {
  const a = need('a')
  const bytes = new Uint8Array(256 * 4 + 200_000)
  for (let i = 0; i < 1024; i++) bytes[i] = i % 256
  bytes.set(randomBytes(200_000), 1024)
  const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)
  await a.files.write('/home/user/qb/blob.bin', ab)
  const back = await a.files.read('/home/user/qb/blob.bin', { format: 'bytes' })
  assert.ok(back instanceof Uint8Array, `format bytes gives a Uint8Array, got ${back?.constructor?.name}`)
  assert.equal(back.length, bytes.length)
  assert.equal(sha256(back), sha256(bytes), 'the bytes read back are the ones written')
  const r = await a.commands.run('sha256sum /home/user/qb/blob.bin')
  assert.equal(r.stdout.split(' ')[0], sha256(bytes), 'the file in the sandbox has the bytes written')
  const blob = await a.files.read('/home/user/qb/blob.bin', { format: 'blob' })
  assert.equal(sha256(new Uint8Array(await blob.arrayBuffer())), sha256(bytes), 'format blob')
  // Bytes a command wrote (every value 0..255) come back as bytes.
  const octal = [...Array(256).keys()].map((i) => '\\' + i.toString(8).padStart(3, '0')).join('')
  await a.commands.run(`printf '${octal}' > /tmp/all.bin`)
  const all = await a.files.read('/tmp/all.bin', { format: 'bytes' })
  assert.deepEqual([...all], [...Array(256).keys()])
  note(`${bytes.length} bytes`)
})

await check('files.makeDir, files.list, files.exists, files.getInfo', async () => {
  const a = need('a')
  assert.equal(await a.files.makeDir('/home/user/qb/sub/deeper'), true, 'makeDir of a new directory')
  assert.equal(await a.files.makeDir('/home/user/qb/sub/deeper'), false, 'makeDir of an existing directory')
  await a.files.write('/home/user/qb/sub/five.txt', '12345')
  const entries = await a.files.list('/home/user/qb/sub')
  const byName = Object.fromEntries(entries.map((e) => [e.name, e]))
  assert.deepEqual(Object.keys(byName).sort(), ['deeper', 'five.txt'], show(entries))
  assert.equal(byName['five.txt'].type, FileType.FILE)
  assert.equal(byName['five.txt'].size, 5)
  assert.equal(byName['five.txt'].path, '/home/user/qb/sub/five.txt')
  assert.equal(byName['five.txt'].owner, 'user')
  assert.equal(byName.deeper.type, FileType.DIR)
  const deep = await a.files.list('/home/user/qb', { depth: 2 })
  assert.ok(
    deep.some((e) => e.path === '/home/user/qb/sub/five.txt'),
    `depth 2 reaches sub/five.txt: ${show(deep.map((e) => e.path))}`,
  )
  assert.equal(await a.files.exists('/home/user/qb/sub/five.txt'), true)
  assert.equal(await a.files.exists('/home/user/qb/sub'), true)
  assert.equal(await a.files.exists('/home/user/qb/nothing-here'), false)
  const info = await a.files.getInfo('/home/user/qb/sub/five.txt')
  assert.equal(info.size, 5)
  assert.equal(info.type, FileType.FILE)
  assert.ok(info.modifiedTime instanceof Date && Math.abs(info.modifiedTime - Date.now()) < 120_000, show(info))
  await rejectsWith(a.files.list('/home/user/qb/nothing-here'), NotFoundError, 'list of a missing directory')
})

await check('files.remove; reading a missing file is FileNotFoundError', async () => {
  const a = need('a')
  await a.files.write('/home/user/qb/gone.txt', 'bye')
  assert.equal(await a.files.exists('/home/user/qb/gone.txt'), true)
  await a.files.remove('/home/user/qb/gone.txt')
  assert.equal(await a.files.exists('/home/user/qb/gone.txt'), false)
  const r = await a.commands.run('test -e /home/user/qb/gone.txt && echo there || echo gone')
  assert.equal(r.stdout, 'gone\n', 'removed in the sandbox')
  await rejectsWith(a.files.read('/home/user/qb/gone.txt'), FileNotFoundError, 'read of a removed file')
  await a.files.remove('/home/user/qb/sub')
  assert.equal(await a.files.exists('/home/user/qb/sub'), false, 'a directory is removed with its contents')
})

await check('files.watchDir reports a created file', async (note) => {
  const a = need('a')
  await a.files.makeDir('/home/user/qb/watched')
  const events = []
  let exitErr = null
  const w = await a.files.watchDir('/home/user/qb/watched', (ev) => events.push(ev), {
    timeoutMs: 30_000,
    onExit: (err) => {
      exitErr = err ?? null
    },
  })
  try {
    await a.files.write('/home/user/qb/watched/new.txt', 'watch me')
    await a.commands.run('echo more >> /home/user/qb/watched/new.txt; rm /home/user/qb/watched/new.txt')
    const seen = await until(10_000, () => events.some((e) => e.name === 'new.txt' && e.type === 'remove'))
    assert.ok(seen, `events for new.txt up to its removal: ${show(events)}; exit ${show(exitErr)}`)
    const kinds = events.filter((e) => e.name === 'new.txt').map((e) => e.type)
    assert.ok(kinds.includes('create') || kinds.includes('write'), `a create or write event: ${show(kinds)}`)
    note(`events: ${kinds.join(', ')}`)
  } finally {
    await w.stop()
  }
})

await check('setTimeout is reflected in getInfo().endAt (extend and shorten)', async () => {
  const a = need('a')
  await a.setTimeout(600_000)
  let left = ((await a.getInfo()).endAt.getTime() - Date.now()) / 1000
  assert.ok(left > 590 && left <= 601, `after setTimeout(600 s) endAt is ${left} s ahead`)
  await a.setTimeout(240_000)
  left = ((await a.getInfo()).endAt.getTime() - Date.now()) / 1000
  assert.ok(left > 230 && left <= 241, `after setTimeout(240 s) endAt is ${left} s ahead`)
})

await check('getInfo reports the sandbox', async () => {
  const a = need('a')
  const info = await a.getInfo()
  assert.equal(info.sandboxId, a.sandboxId)
  assert.equal(typeof info.templateId, 'string')
  assert.ok(info.templateId.length > 0)
  assert.equal(info.state, 'running')
  assert.ok(info.startedAt instanceof Date && info.startedAt <= new Date(Date.now() + 1000), show(info))
  assert.ok(info.endAt > info.startedAt, show(info))
  assert.ok(Number.isInteger(info.cpuCount) && info.cpuCount >= 1, show(info))
  assert.ok(Number.isInteger(info.memoryMB) && info.memoryMB >= 128, show(info))
  assert.match(info.envdVersion, /^\d+\.\d+\.\d+$/)
  const same = await Sandbox.getInfo(a.sandboxId)
  assert.equal(same.sandboxId, a.sandboxId, 'static getInfo')
  assert.equal(await a.isRunning(), true, 'isRunning')
})

await check('Sandbox.list: metadata filter and the paginator', async (note) => {
  const a = need('a')
  const b = need('b')
  const ids = new Set()
  const pages = []
  const pager = Sandbox.list({ query: { metadata: { suite: 'qb-node-sdk', run: RUN } }, limit: 1 })
  assert.equal(pager.hasNext, true, 'a new paginator has a first page')
  while (pager.hasNext) {
    const page = await pager.nextItems()
    pages.push(page.map((s) => s.sandboxId))
    for (const s of page) ids.add(s.sandboxId)
    assert.ok(pages.length <= 5, `too many pages: ${show(pages)}`)
  }
  assert.deepEqual([...ids].sort(), [a.sandboxId, b.sandboxId].sort(), `this run's two sandboxes: ${show(pages)}`)
  assert.ok(pages.every((p) => p.length <= 1), `limit 1 gives pages of at most 1: ${show(pages)}`)
  assert.ok(pages.filter((p) => p.length === 1).length === 2, `two non-empty pages: ${show(pages)}`)
  const onlyB = await Sandbox.list({ query: { metadata: { run: RUN, which: 'b' } } }).nextItems()
  assert.deepEqual(
    onlyB.map((s) => s.sandboxId),
    [b.sandboxId],
    'two metadata keys filter together',
  )
  assert.deepEqual(onlyB[0].metadata, { suite: 'qb-node-sdk', run: RUN, which: 'b' })
  assert.equal(onlyB[0].state, 'running')
  const none = Sandbox.list({ query: { metadata: { run: 'no-such-run' } } })
  assert.deepEqual(await none.nextItems(), [])
  assert.equal(none.hasNext, false)
  note(`pages ${show(pages)}`)
})

await check('getMetrics returns the sandbox usage (CPU, memory)', async (note) => {
  const a = need('a')
  await a.commands.run('head -c 20000000 /dev/urandom | sha256sum > /dev/null')
  const m = await until(15_000, async () => {
    const ms = await a.getMetrics()
    return ms.length > 0 ? ms : null
  }, 1000)
  assert.ok(m && m.length > 0, 'metrics within 15 s')
  const info = await a.getInfo()
  for (const x of m) {
    assert.ok(x.timestamp instanceof Date && !Number.isNaN(x.timestamp.getTime()), `timestamp: ${show(x)}`)
    assert.ok(Math.abs(x.timestamp - Date.now()) < 10 * 60_000, `a recent timestamp: ${show(x)}`)
    assert.equal(x.cpuCount, info.cpuCount, `cpuCount as getInfo says: ${show(x)}`)
    assert.ok(x.cpuUsedPct >= 0, show(x))
    assert.equal(x.memTotal, info.memoryMB * 1024 * 1024, `memTotal is the sandbox's memory (${info.memoryMB} MiB): ${show(x)}`)
    assert.ok(x.memUsed > 0 && x.memUsed <= x.memTotal, show(x))
  }
  assert.ok(
    m.every((x, i) => i === 0 || x.timestamp >= m[i - 1].timestamp),
    `oldest first: ${show(m.map((x) => x.timestamp))}`,
  )
  state.metrics = m
  note(`${m.length} sample(s); last ${show(m[m.length - 1])}`)
})

await check('getMetrics disk figures are consistent (0 < diskUsed <= diskTotal)', async (note) => {
  const a = need('a')
  const m = state.metrics || (await a.getMetrics())
  assert.ok(m.length > 0, 'metrics')
  // What the sandbox itself sees as its disk.
  const df = (await a.commands.run('df -B1 --output=size,used / | tail -1')).stdout.trim().split(/\s+/).map(Number)
  note(`df / in the sandbox: size ${df[0]}, used ${df[1]}; last sample disk ${m[m.length - 1].diskUsed}/${m[m.length - 1].diskTotal}`)
  for (const x of m) {
    assert.ok(x.diskUsed > 0, `diskUsed: ${show(x)}`)
    assert.ok(x.diskTotal > 0 && x.diskUsed <= x.diskTotal, `diskTotal (df / says ${df[0]} bytes) >= diskUsed: ${show(x)}`)
  }
})

await check('pause, then Sandbox.connect resumes it (running again, processes and files kept)', async (note) => {
  const a = need('a')
  await a.commands.run('echo kept > /home/user/before-pause.txt')
  const bg = await a.commands.run('sleep 600', { background: true })
  await bg.disconnect()
  const t0 = Date.now()
  assert.equal(await a.pause(), true, 'pause of a running sandbox')
  const tp = Date.now() - t0
  assert.equal((await a.getInfo()).state, 'paused')
  assert.equal(await a.pause(), false, 'pause of a paused sandbox')
  const listed = await Sandbox.list({ query: { metadata: { run: RUN, which: 'a' }, state: ['paused'] } }).nextItems()
  assert.deepEqual(listed.map((s) => s.sandboxId), [a.sandboxId], 'listed as paused')
  const t1 = Date.now()
  const again = await Sandbox.connect(a.sandboxId)
  const tc = Date.now() - t1
  assert.equal(again.sandboxId, a.sandboxId)
  assert.equal((await again.getInfo()).state, 'running')
  assert.equal((await again.commands.run('cat /home/user/before-pause.txt')).stdout, 'kept\n', 'files are kept')
  const procs = await again.commands.list()
  assert.ok(procs.some((p) => p.pid === bg.pid), `the process started before the pause lives: ${show(procs)}`)
  assert.equal((await again.commands.run('echo awake')).stdout, 'awake\n')
  await again.commands.kill(bg.pid)
  // connect to a running sandbox is fine too
  const third = await Sandbox.connect(a.sandboxId)
  assert.equal((await third.getInfo()).state, 'running')
  note(`pause ${tp} ms, connect (resume) ${tc} ms`)
})

await check("another sandbox's envd access token is refused (401)", async (note) => {
  const a = need('a')
  const b = need('b')
  const tokenA = a.envdAccessToken
  const tokenB = b.envdAccessToken
  assert.ok(typeof tokenA === 'string' && tokenA.length >= 16, `A has an envd access token: ${show(tokenA)}`)
  assert.ok(typeof tokenB === 'string' && tokenB.length >= 16, `B has an envd access token: ${show(tokenB)}`)
  assert.notEqual(tokenA, tokenB)
  const own = await envdUnary('process.Process/List', { sandboxId: a.sandboxId, token: tokenA })
  assert.equal(own.status, 200, `A's own token: ${own.status} ${own.text}`)
  assert.ok(Array.isArray(own.json?.processes) || (own.json && Object.keys(own.json).length === 0), own.text)
  const cross = await envdUnary('process.Process/List', { sandboxId: a.sandboxId, token: tokenB })
  assert.equal(cross.status, 401, `B's token on A: ${cross.status} ${cross.text}`)
  // envd answers this from its HTTP middleware, before Connect: `{"code": 401, "message"}`.
  assert.ok(cross.json && [401, 'unauthenticated'].includes(cross.json.code), `an error body: ${cross.text}`)
  assert.ok(!cross.text.includes('"processes"'), `nothing of A's processes: ${cross.text}`)
  const none = await envdUnary('process.Process/List', { sandboxId: a.sandboxId })
  assert.equal(none.status, 401, `no token: ${none.status} ${none.text}`)
  const forged = await envdUnary('process.Process/List', { sandboxId: a.sandboxId, token: tokenA.slice(0, -1) + (tokenA.endsWith('A') ? 'B' : 'A') })
  assert.equal(forged.status, 401, `a changed token: ${forged.status} ${forged.text}`)
  // The same through the SDK: a handle on A that carries B's token.
  const info = await a.getInfo()
  const forgedHandle = new Sandbox({ sandboxId: a.sandboxId, envdVersion: info.envdVersion, envdAccessToken: tokenB })
  await rejectsWith(forgedHandle.commands.list(), AuthenticationError, "commands.list on A with B's token")
  await rejectsWith(forgedHandle.commands.run('id'), AuthenticationError, "commands.run on A with B's token")
  note(`B's token on A: ${cross.status} ${cross.text.slice(0, 160)}`)
})

await check('a wrong API key is refused with AuthenticationError', async (note) => {
  const a = need('a')
  await rejectsWith(Sandbox.create({ apiKey: 'wrong' }), AuthenticationError, 'create with the malformed key `wrong`')
  await rejectsWith(Sandbox.getInfo(a.sandboxId, { apiKey: 'wrong' }), AuthenticationError, 'getInfo with `wrong`')
  await rejectsWith(Sandbox.list({ apiKey: 'wrong' }).nextItems(), AuthenticationError, 'list with `wrong`')
  if (WRONG_KEY) {
    await rejectsWith(Sandbox.create({ apiKey: WRONG_KEY }), AuthenticationError, `create with the well-formed but unknown ${WRONG_KEY}`)
    await rejectsWith(Sandbox.connect(a.sandboxId, { apiKey: WRONG_KEY }), AuthenticationError, 'connect with an unknown key')
    await rejectsWith(Sandbox.kill(a.sandboxId, { apiKey: WRONG_KEY }), AuthenticationError, 'kill with an unknown key')
    note('malformed and well-formed unknown keys refused')
  } else {
    note('malformed key refused (QB_WRONG_API_KEY not set: the server takes any well-formed key)')
  }
  assert.equal((await a.getInfo()).state, 'running', 'A survived the refused kill')
})

await check('an unknown sandbox id is NotFoundError', async () => {
  const id = randomId()
  await rejectsWith(Sandbox.connect(id), SandboxNotFoundError, `connect to ${id}`)
  await rejectsWith(Sandbox.getInfo(id), NotFoundError, `getInfo of ${id}`)
  await rejectsWith(Sandbox.getMetrics(id), NotFoundError, `getMetrics of ${id}`)
  assert.equal(await Sandbox.kill(id), false, `kill of ${id}`)
  await rejectsWith(Sandbox.setTimeout(id, 60_000), NotFoundError, `setTimeout of ${id}`)
})

await check('kill, then getInfo is NotFoundError', async () => {
  const b = need('b')
  assert.equal(await b.kill(), true, 'kill of a running sandbox')
  made.delete(b.sandboxId)
  await rejectsWith(b.getInfo(), NotFoundError, 'getInfo of a killed sandbox')
  assert.equal(await b.kill(), false, 'kill of a killed sandbox')
  await rejectsWith(Sandbox.connect(b.sandboxId), NotFoundError, 'connect to a killed sandbox')
  assert.equal(await b.isRunning(), false, 'isRunning of a killed sandbox')
  // Its envd is gone too: commands to it fail.
  await rejectsWith(b.commands.run('true', { requestTimeoutMs: 15_000 }), Error, 'a command in a killed sandbox')
  const listed = await Sandbox.list({ query: { metadata: { run: RUN } } }).nextItems()
  assert.ok(!listed.some((s) => s.sandboxId === b.sandboxId), `no longer listed: ${show(listed.map((s) => s.sandboxId))}`)
})

// ---------------------------------------------------------------- clean up, summary

for (const id of made) {
  try {
    await Sandbox.kill(id)
  } catch (e) {
    console.log(`(could not kill ${id}: ${e.message})`)
  }
}
const failed = results.filter((r) => !r.ok)
const total = results.reduce((s, r) => s + r.ms, 0)
console.log(
  `SUMMARY: ${results.length - failed.length} passed, ${failed.length} failed of ${results.length} checks in ${(total / 1000).toFixed(1)} s` +
    (failed.length ? `; failed: ${failed.map((r) => r.name).join(' | ')}` : ''),
)
process.exit(failed.length ? 1 : 0)
