//! Behaviour of `SqliteStore` through the `SandboxStore` port, plus what only a file
//! database shows (reopening, migrations, damaged rows, several connections).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quantbox_sandbox::{
    ExecOutcome, ExecStatus, ExecUser, ExecutionId, ExecutionRecord, ListFilter, LogLine,
    Resources, SandboxId, SandboxRecord, SandboxStatus, SandboxStore, StatusFilter, StopReason,
    Stream, Timestamp,
};
use quantbox_store::SqliteStore;

// ---------------------------------------------------------------------------------------
// Fixtures

fn sid(n: u32) -> SandboxId {
    SandboxId::parse(&format!("sb{n:018}")).unwrap()
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(ms)
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A record with every optional field set and every value distinct.
fn full_sandbox(id: SandboxId, created_ms: i64) -> SandboxRecord {
    SandboxRecord {
        id,
        name: "策略 α — “quoted” ✓".into(),
        template: "python-3.12".into(),
        provider: "local".into(),
        status: SandboxStatus::Stopped,
        stop_reason: Some(StopReason::StartFailed),
        resources: Resources {
            memory_mb: 4096,
            cpu_count: 0.75,
            pids_max: i64::MAX as u64,
        },
        timeout_s: 3600,
        env_vars: map(&[
            ("PATH", "/usr/bin:/bin"),
            ("ÜNICODE", "值 \"q\" \n newline"),
        ]),
        metadata: map(&[
            ("owner", "agent-7"),
            ("a.b", "dotted"),
            ("it's \"x\"", "quoted"),
        ]),
        deployment_id: Some("dep-1".into()),
        created_at: ts(created_ms),
        expires_at: ts(created_ms + 3_600_000),
        stopped_at: Some(ts(created_ms + 1234)),
        paused_at: Some(ts(created_ms + 600)),
        runtime: serde_json::json!({"pid": 4242, "dir": "/var/lib/quantbox/x", "nested": [1, 2.5, null, true, {"k": "ü"}]}),
    }
}

/// A record with every optional field empty.
fn bare_sandbox(id: SandboxId, created_ms: i64, status: SandboxStatus) -> SandboxRecord {
    SandboxRecord {
        id,
        name: String::new(),
        template: "base".into(),
        provider: "local".into(),
        status,
        stop_reason: None,
        resources: Resources {
            memory_mb: 0,
            cpu_count: 1.0,
            pids_max: 1,
        },
        timeout_s: 0,
        env_vars: BTreeMap::new(),
        metadata: BTreeMap::new(),
        deployment_id: None,
        created_at: ts(created_ms),
        expires_at: ts(created_ms),
        stopped_at: None,
        paused_at: None,
        runtime: serde_json::Value::Null,
    }
}

fn full_execution(id: &str, sandbox: &SandboxId) -> ExecutionRecord {
    ExecutionRecord {
        id: ExecutionId::from_string(id.into()),
        sandbox_id: sandbox.clone(),
        command: "python3 -c 'print(\"héllo\")'".into(),
        args: vec![
            "--flag".into(),
            "日本語".into(),
            String::new(),
            "a\"b'c".into(),
        ],
        cwd: Some("/home/user/策略".into()),
        user: ExecUser::Root,
        status: ExecStatus::Finished,
        outcome: ExecOutcome {
            pid: 31337,
            exit_code: Some(-2),
            signal: Some(9),
            timed_out: true,
            cancelled: false,
            oom_killed: false,
            sandbox_ended: true,
            // Not UTF-8, with a NUL in the middle.
            stdout: vec![0xff, 0xfe, 0x00, 0x80, b'o', b'k', 0xc3],
            stderr: vec![0xc0, 0xaf, b'\n', 0x00],
            stdout_truncated: false,
            stderr_truncated: true,
        },
        error: Some("no such file: „x“".into()),
        started_at: ts(1_795_000_000_000),
        finished_at: Some(ts(1_795_000_000_777)),
    }
}

fn bare_execution(id: &str, sandbox: &SandboxId, status: ExecStatus) -> ExecutionRecord {
    ExecutionRecord {
        id: ExecutionId::from_string(id.into()),
        sandbox_id: sandbox.clone(),
        command: "true".into(),
        args: Vec::new(),
        cwd: None,
        user: ExecUser::User,
        status,
        outcome: ExecOutcome {
            pid: 0,
            exit_code: None,
            signal: None,
            timed_out: false,
            cancelled: false,
            oom_killed: true,
            sandbox_ended: false,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_truncated: true,
            stderr_truncated: false,
        },
        error: None,
        started_at: ts(5),
        finished_at: None,
    }
}

fn line(ms: i64, stream: Stream, text: &str) -> LogLine {
    LogLine {
        at: ts(ms),
        stream,
        line: text.into(),
    }
}

/// Records have no `PartialEq`; their derived `Debug` shows every field.
fn same<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

fn assert_same<T: std::fmt::Debug>(got: &T, want: &T) {
    assert!(same(got, want), "got  {got:#?}\nwant {want:#?}");
}

fn ids(records: &[SandboxRecord]) -> Vec<SandboxId> {
    records.iter().map(|r| r.id.clone()).collect()
}

fn mem() -> SqliteStore {
    SqliteStore::open_in_memory().unwrap()
}

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("quantbox.db")
}

fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

// ---------------------------------------------------------------------------------------
// Sandboxes

#[test]
fn sandbox_records_round_trip_every_field() {
    let store = mem();
    let full = full_sandbox(sid(1), 1_795_000_000_123);
    let bare = bare_sandbox(sid(2), -5, SandboxStatus::Creating);
    store.put_sandbox(&full).unwrap();
    store.put_sandbox(&bare).unwrap();
    assert_same(&store.get_sandbox(&full.id).unwrap().unwrap(), &full);
    assert_same(&store.get_sandbox(&bare.id).unwrap().unwrap(), &bare);

    // Every status and stop reason survives too.
    let statuses = [
        SandboxStatus::Creating,
        SandboxStatus::Running,
        SandboxStatus::Paused,
        SandboxStatus::Stopped,
    ];
    let reasons = [
        StopReason::Terminated,
        StopReason::Expired,
        StopReason::Crashed,
        StopReason::Lost,
        StopReason::StartFailed,
    ];
    for (i, reason) in reasons.into_iter().enumerate() {
        let mut r = full_sandbox(sid(10 + i as u32), i as i64);
        r.status = statuses[i % statuses.len()];
        r.stop_reason = Some(reason);
        store.put_sandbox(&r).unwrap();
        assert_same(&store.get_sandbox(&r.id).unwrap().unwrap(), &r);
    }
}

#[test]
fn put_sandbox_replaces_the_whole_record_in_place() {
    let store = mem();
    let first = full_sandbox(sid(1), 100);
    store.put_sandbox(&first).unwrap();
    // Rows referencing the sandbox must not stop it from being replaced.
    store
        .put_execution(&full_execution("ex_1", &first.id))
        .unwrap();
    store
        .append_logs(&first.id, &[line(1, Stream::Event, "created")], 10)
        .unwrap();

    let mut second = bare_sandbox(sid(1), 200, SandboxStatus::Running);
    second.name = "renamed".into();
    store.put_sandbox(&second).unwrap();

    assert_same(&store.get_sandbox(&first.id).unwrap().unwrap(), &second);
    assert_eq!(
        store.list_sandboxes(&ListFilter::default()).unwrap().len(),
        1
    );
    assert!(store.get_execution("ex_1").unwrap().is_some());
    assert_eq!(store.recent_logs(&first.id, 10).unwrap().len(), 1);
}

#[test]
fn unknown_ids_are_none() {
    let store = mem();
    store.put_sandbox(&full_sandbox(sid(1), 1)).unwrap();
    store
        .put_execution(&full_execution("ex_1", &sid(1)))
        .unwrap();
    assert!(store.get_sandbox(&sid(2)).unwrap().is_none());
    assert!(store.get_execution("ex_2").unwrap().is_none());
    assert!(store.recent_logs(&sid(2), 10).unwrap().is_empty());
}

#[test]
fn list_is_newest_first_then_by_id() {
    let store = mem();
    for (n, created) in [(1, 100), (2, 300), (3, 200), (5, 300), (4, 300)] {
        store
            .put_sandbox(&bare_sandbox(sid(n), created, SandboxStatus::Running))
            .unwrap();
    }
    let all = store.list_sandboxes(&ListFilter::default()).unwrap();
    assert_eq!(ids(&all), vec![sid(2), sid(4), sid(5), sid(3), sid(1)]);
}

#[test]
fn list_filters_by_status_with_creating_counted_as_running() {
    let store = mem();
    store
        .put_sandbox(&bare_sandbox(sid(1), 1, SandboxStatus::Creating))
        .unwrap();
    store
        .put_sandbox(&bare_sandbox(sid(2), 2, SandboxStatus::Running))
        .unwrap();
    store
        .put_sandbox(&bare_sandbox(sid(3), 3, SandboxStatus::Paused))
        .unwrap();
    store
        .put_sandbox(&bare_sandbox(sid(4), 4, SandboxStatus::Stopped))
        .unwrap();
    let with = |status| {
        let f = ListFilter {
            status,
            ..Default::default()
        };
        ids(&store.list_sandboxes(&f).unwrap())
    };
    assert_eq!(with(Some(StatusFilter::Running)), vec![sid(2), sid(1)]);
    assert_eq!(with(Some(StatusFilter::Paused)), vec![sid(3)]);
    assert_eq!(with(Some(StatusFilter::Stopped)), vec![sid(4)]);
    assert_eq!(with(None), vec![sid(4), sid(3), sid(2), sid(1)]);
}

#[test]
fn list_filters_by_deployment_id() {
    let store = mem();
    let mut a = bare_sandbox(sid(1), 1, SandboxStatus::Running);
    a.deployment_id = Some("dep-a".into());
    let mut b = bare_sandbox(sid(2), 2, SandboxStatus::Stopped);
    b.deployment_id = Some("dep-b".into());
    let mut a2 = bare_sandbox(sid(3), 3, SandboxStatus::Stopped);
    a2.deployment_id = Some("dep-a".into());
    let none = bare_sandbox(sid(4), 4, SandboxStatus::Running);
    for r in [&a, &b, &a2, &none] {
        store.put_sandbox(r).unwrap();
    }
    let by = |d: &str, status| {
        let f = ListFilter {
            deployment_id: Some(d.into()),
            status,
            ..Default::default()
        };
        ids(&store.list_sandboxes(&f).unwrap())
    };
    assert_eq!(by("dep-a", None), vec![sid(3), sid(1)]);
    assert_eq!(by("dep-b", None), vec![sid(2)]);
    assert_eq!(by("dep-a", Some(StatusFilter::Stopped)), vec![sid(3)]);
    assert!(by("dep-c", None).is_empty());
}

#[test]
fn list_metadata_filter_needs_every_pair_and_takes_keys_literally() {
    let store = mem();
    let with_meta = |n, pairs: &[(&str, &str)]| {
        let mut r = bare_sandbox(sid(n), i64::from(n), SandboxStatus::Running);
        r.metadata = map(pairs);
        store.put_sandbox(&r).unwrap();
    };
    with_meta(1, &[("team", "alpha"), ("env", "prod")]);
    with_meta(2, &[("team", "alpha"), ("env", "dev")]);
    with_meta(3, &[("team", "beta"), ("env", "prod")]);
    // A key with a dot, and a nested-looking twin that a JSON path `$.a.b` would confuse.
    with_meta(4, &[("a.b", "1")]);
    with_meta(5, &[("a", "{\"b\":\"1\"}")]);
    // Quotes of both kinds and a backslash in the key.
    with_meta(6, &[("it's \"q\" \\", "yes")]);
    with_meta(7, &[]);

    let by = |pairs: &[(&str, &str)]| {
        let f = ListFilter {
            metadata: map(pairs),
            ..Default::default()
        };
        ids(&store.list_sandboxes(&f).unwrap())
    };
    assert_eq!(by(&[("team", "alpha")]), vec![sid(2), sid(1)]);
    assert_eq!(by(&[("team", "alpha"), ("env", "prod")]), vec![sid(1)]);
    assert!(by(&[("team", "alpha"), ("env", "staging")]).is_empty());
    assert!(by(&[("team", "alpha"), ("missing", "x")]).is_empty());
    assert_eq!(by(&[("a.b", "1")]), vec![sid(4)]);
    assert_eq!(by(&[("it's \"q\" \\", "yes")]), vec![sid(6)]);
    assert!(by(&[("it's \"q\" \\", "no")]).is_empty());
    assert_eq!(by(&[]).len(), 7);
}

#[test]
fn active_sandboxes_are_those_not_stopped() {
    let store = mem();
    store
        .put_sandbox(&bare_sandbox(sid(1), 1, SandboxStatus::Creating))
        .unwrap();
    store
        .put_sandbox(&bare_sandbox(sid(2), 2, SandboxStatus::Running))
        .unwrap();
    store
        .put_sandbox(&bare_sandbox(sid(3), 3, SandboxStatus::Paused))
        .unwrap();
    store
        .put_sandbox(&bare_sandbox(sid(4), 4, SandboxStatus::Stopped))
        .unwrap();
    let mut active = ids(&store.active_sandboxes().unwrap());
    active.sort();
    assert_eq!(active, vec![sid(1), sid(2), sid(3)]);
}

#[test]
fn values_sqlite_cannot_hold_are_refused_not_wrapped() {
    let store = mem();
    let mut r = bare_sandbox(sid(1), 1, SandboxStatus::Running);
    r.resources.memory_mb = u64::MAX;
    let err = store.put_sandbox(&r).unwrap_err().to_string();
    assert!(err.contains(&format!("insert sandbox {}", sid(1))), "{err}");
    assert!(err.contains("memory_mb"), "{err}");
    assert!(store.get_sandbox(&sid(1)).unwrap().is_none());
}

// ---------------------------------------------------------------------------------------
// Executions

#[test]
fn execution_records_round_trip_every_field() {
    let store = mem();
    store
        .put_sandbox(&bare_sandbox(sid(1), 1, SandboxStatus::Running))
        .unwrap();
    let full = full_execution("ex_full", &sid(1));
    let bare = bare_execution("ex_bare", &sid(1), ExecStatus::Running);
    store.put_execution(&full).unwrap();
    store.put_execution(&bare).unwrap();
    assert_same(&store.get_execution("ex_full").unwrap().unwrap(), &full);
    assert_same(&store.get_execution("ex_bare").unwrap().unwrap(), &bare);

    for (i, status) in [
        ExecStatus::Running,
        ExecStatus::Finished,
        ExecStatus::StartFailed,
        ExecStatus::Interrupted,
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("ex_status_{i}");
        let e = bare_execution(&id, &sid(1), status);
        store.put_execution(&e).unwrap();
        assert_same(&store.get_execution(&id).unwrap().unwrap(), &e);
    }
}

#[test]
fn put_execution_replaces() {
    let store = mem();
    store
        .put_sandbox(&bare_sandbox(sid(1), 1, SandboxStatus::Running))
        .unwrap();
    store
        .put_execution(&bare_execution("ex_1", &sid(1), ExecStatus::Running))
        .unwrap();
    let done = full_execution("ex_1", &sid(1));
    store.put_execution(&done).unwrap();
    assert_same(&store.get_execution("ex_1").unwrap().unwrap(), &done);
}

#[test]
fn rows_must_belong_to_a_stored_sandbox() {
    let store = mem();
    let err = store
        .put_execution(&full_execution("ex_orphan", &sid(9)))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("insert execution ex_orphan of sandbox {}", sid(9))),
        "{err}"
    );
    assert!(store.get_execution("ex_orphan").unwrap().is_none());
    assert!(
        store
            .append_logs(&sid(9), &[line(1, Stream::Event, "x")], 10)
            .is_err()
    );
}

#[test]
fn interrupt_executions_counts_running_ones_in_scope() {
    let store = mem();
    for n in [1, 2] {
        store
            .put_sandbox(&bare_sandbox(sid(n), 1, SandboxStatus::Running))
            .unwrap();
    }
    let put = |id: &str, sb: u32, status| {
        store
            .put_execution(&bare_execution(id, &sid(sb), status))
            .unwrap();
    };
    put("a1", 1, ExecStatus::Running);
    put("a2", 1, ExecStatus::Running);
    put("a3", 1, ExecStatus::Finished);
    put("a4", 1, ExecStatus::StartFailed);
    put("b1", 2, ExecStatus::Running);
    let status = |id: &str| store.get_execution(id).unwrap().unwrap().status;

    assert_eq!(store.interrupt_executions(Some(&sid(1))).unwrap(), 2);
    assert_eq!(status("a1"), ExecStatus::Interrupted);
    assert_eq!(status("a2"), ExecStatus::Interrupted);
    assert_eq!(status("a3"), ExecStatus::Finished);
    assert_eq!(status("a4"), ExecStatus::StartFailed);
    assert_eq!(status("b1"), ExecStatus::Running);

    assert_eq!(store.interrupt_executions(Some(&sid(3))).unwrap(), 0);
    put("a5", 1, ExecStatus::Running);
    assert_eq!(store.interrupt_executions(None).unwrap(), 2);
    assert_eq!(status("a5"), ExecStatus::Interrupted);
    assert_eq!(status("b1"), ExecStatus::Interrupted);
    assert_eq!(store.interrupt_executions(None).unwrap(), 0);
}

// ---------------------------------------------------------------------------------------
// Logs

#[test]
fn append_logs_keeps_exactly_keep_output_lines_and_every_event() {
    let store = mem();
    let (a, b) = (sid(1), sid(2));
    for id in [&a, &b] {
        store
            .put_sandbox(&bare_sandbox(id.clone(), 1, SandboxStatus::Running))
            .unwrap();
    }
    let keep = 5;
    let mut all = Vec::new();
    let mut t = 0;
    // Several batches, output of both streams interleaved with events.
    for batch in 0..4 {
        let mut lines = vec![line(t, Stream::Event, &format!("event {batch}"))];
        t += 1;
        for i in 0..3 {
            let stream = if i % 2 == 0 {
                Stream::Stdout
            } else {
                Stream::Stderr
            };
            lines.push(line(t, stream, &format!("out {batch}.{i} ✓")));
            t += 1;
        }
        store.append_logs(&a, &lines, keep).unwrap();
        all.extend(lines);
    }
    // Another sandbox's lines count separately and are not pruned by `a`'s appends.
    let other: Vec<LogLine> = (0..8).map(|i| line(i, Stream::Stdout, "b")).collect();
    store.append_logs(&b, &other, 100).unwrap();
    store.append_logs(&a, &[], keep).unwrap();

    let got = store.recent_logs(&a, 1000).unwrap();
    let is_output = |l: &LogLine| l.stream != Stream::Event;
    let output: Vec<&LogLine> = all.iter().filter(|l| is_output(l)).collect();
    let want: Vec<LogLine> = all
        .iter()
        .filter(|l| !is_output(l) || output[output.len() - keep..].iter().any(|k| same(*k, l)))
        .cloned()
        .collect();
    assert_eq!(got, want);
    assert_eq!(got.iter().filter(|l| is_output(l)).count(), keep);
    assert_eq!(got.iter().filter(|l| !is_output(l)).count(), 4);
    assert_eq!(store.recent_logs(&b, 1000).unwrap(), other);

    // keep = 0 drops every output line, still no event.
    store.append_logs(&a, &[], 0).unwrap();
    let got = store.recent_logs(&a, 1000).unwrap();
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|l| l.stream == Stream::Event));
}

#[test]
fn recent_logs_are_the_last_n_oldest_first() {
    let store = mem();
    let a = sid(1);
    store
        .put_sandbox(&bare_sandbox(a.clone(), 1, SandboxStatus::Running))
        .unwrap();
    // Same timestamps and out-of-order times: order is insertion order, not `at`.
    let lines = vec![
        line(50, Stream::Stdout, "first"),
        line(50, Stream::Event, "second"),
        line(10, Stream::Stderr, "third"),
        line(70, Stream::Stdout, "fourth"),
    ];
    store.append_logs(&a, &lines[..2], 100).unwrap();
    store.append_logs(&a, &lines[2..], 100).unwrap();
    assert_eq!(store.recent_logs(&a, 2).unwrap(), lines[2..].to_vec());
    assert_eq!(store.recent_logs(&a, 3).unwrap(), lines[1..].to_vec());
    assert_eq!(store.recent_logs(&a, 100).unwrap(), lines);
    assert!(store.recent_logs(&a, 0).unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------
// Files, migrations, damaged rows

#[test]
fn a_file_database_keeps_everything_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let sandbox = full_sandbox(sid(1), 42);
    let exec = full_execution("ex_1", &sid(1));
    let lines = vec![
        line(1, Stream::Event, "created"),
        line(2, Stream::Stdout, "hi"),
    ];
    {
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.path(), Some(path.as_path()));
        store.put_sandbox(&sandbox).unwrap();
        store.put_execution(&exec).unwrap();
        store.append_logs(&sid(1), &lines, 10).unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_same(&store.get_sandbox(&sid(1)).unwrap().unwrap(), &sandbox);
    assert_same(&store.get_execution("ex_1").unwrap().unwrap(), &exec);
    assert_eq!(store.recent_logs(&sid(1), 10).unwrap(), lines);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    }
}

#[test]
fn open_fails_clearly_when_the_directory_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing").join("quantbox.db");
    let err = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(err.contains("open database"), "{err}");
    assert!(err.contains("missing"), "{err}");
}

fn schema_versions(path: &Path) -> Vec<(i64, i64)> {
    let conn = raw(path);
    let mut stmt = conn
        .prepare("SELECT version, applied_at FROM schema_migrations ORDER BY version")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn migrations_are_applied_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    drop(SqliteStore::open(&path).unwrap());
    let first = schema_versions(&path);
    assert!(!first.is_empty());
    let versions: Vec<i64> = first.iter().map(|v| v.0).collect();
    assert_eq!(versions, (1..=first.len() as i64).collect::<Vec<_>>());

    let store = SqliteStore::open(&path).unwrap();
    store
        .put_sandbox(&bare_sandbox(sid(1), 1, SandboxStatus::Running))
        .unwrap();
    drop(store);
    drop(SqliteStore::open(&path).unwrap());
    // Same rows, same application times: nothing ran again.
    assert_eq!(schema_versions(&path), first);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    drop(SqliteStore::open(&path).unwrap());
    let known = schema_versions(&path).last().unwrap().0;
    let newer = known + 1;
    raw(&path)
        .execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, 0)",
            [newer],
        )
        .unwrap();
    let err = SqliteStore::open(&path).unwrap_err().to_string();
    let want = format!(
        "database schema version {newer} is newer than this quantbox (knows up to {known}); \
         upgrade quantbox"
    );
    assert!(err.contains(&want), "{err}");
}

/// Stores a record, damages one column behind the store's back, and returns the error
/// that reading it gives.
fn damage(path: &Path, sql: &str, read: impl FnOnce(&SqliteStore) -> String) -> String {
    raw(path).execute(sql, []).unwrap();
    let store = SqliteStore::open(path).unwrap();
    read(&store)
}

/// Reads through the store and returns the error it gives.
type Reader<'a> = &'a dyn Fn(&SqliteStore) -> String;

#[test]
fn damaged_rows_are_errors_naming_table_id_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let store = SqliteStore::open(&path).unwrap();
        store.put_sandbox(&full_sandbox(sid(1), 1)).unwrap();
        store
            .put_execution(&full_execution("ex_1", &sid(1)))
            .unwrap();
        store
            .append_logs(&sid(1), &[line(1, Stream::Stdout, "x")], 10)
            .unwrap();
    }
    let get_sb = |s: &SqliteStore| s.get_sandbox(&sid(1)).unwrap_err().to_string();
    let list_sb = |s: &SqliteStore| {
        s.list_sandboxes(&ListFilter::default())
            .unwrap_err()
            .to_string()
    };
    let get_ex = |s: &SqliteStore| s.get_execution("ex_1").unwrap_err().to_string();
    let sb = sid(1).to_string();
    let cases: Vec<(&str, Reader<'_>, &str, &str, &str)> = vec![
        (
            "UPDATE sandboxes SET status = 'exploded'",
            &get_sb,
            "sandboxes",
            &sb,
            "status",
        ),
        (
            "UPDATE sandboxes SET stop_reason = 'bored'",
            &list_sb,
            "sandboxes",
            &sb,
            "stop_reason",
        ),
        (
            "UPDATE sandboxes SET metadata = '{not json'",
            &get_sb,
            "sandboxes",
            &sb,
            "metadata",
        ),
        (
            "UPDATE sandboxes SET env_vars = '[1, 2]'",
            &get_sb,
            "sandboxes",
            &sb,
            "env_vars",
        ),
        (
            "UPDATE sandboxes SET runtime = ''",
            &get_sb,
            "sandboxes",
            &sb,
            "runtime",
        ),
        (
            "UPDATE sandboxes SET memory_mb = -1",
            &get_sb,
            "sandboxes",
            &sb,
            "memory_mb",
        ),
        (
            "UPDATE executions SET user = 'nobody'",
            &get_ex,
            "executions",
            "ex_1",
            "user",
        ),
        (
            "UPDATE executions SET status = 'done'",
            &get_ex,
            "executions",
            "ex_1",
            "status",
        ),
        (
            "UPDATE executions SET args = '\"x\"'",
            &get_ex,
            "executions",
            "ex_1",
            "args",
        ),
        (
            "UPDATE executions SET exit_code = 99999999999",
            &get_ex,
            "executions",
            "ex_1",
            "exit_code",
        ),
        (
            "UPDATE log_lines SET stream = 'stdin'",
            &|s: &SqliteStore| s.recent_logs(&sid(1), 10).unwrap_err().to_string(),
            "log_lines",
            "1",
            "stream",
        ),
    ];
    // Each case starts from a fresh copy of the good database.
    let good = std::fs::read(&path).unwrap();
    for (sql, read, table, id, column) in cases {
        std::fs::write(&path, &good).unwrap();
        let err = damage(&path, sql, |s| read(s));
        let want = format!("decode {table} {id}: column {column}:");
        assert!(err.contains(&want), "after `{sql}`: {err}\nwanted `{want}`");
    }
}

// ---------------------------------------------------------------------------------------
// Concurrency

const THREADS: usize = 8;
const PER_THREAD: usize = 40;

fn insert_many(store: &SqliteStore, thread: usize) {
    for i in 0..PER_THREAD {
        let mut e = full_execution(&format!("ex_{thread}_{i}"), &sid(1));
        e.status = ExecStatus::Running;
        store.put_execution(&e).unwrap();
        store
            .append_logs(&sid(1), &[line(i as i64, Stream::Stdout, "x")], 50)
            .unwrap();
    }
}

fn assert_all_inserted(store: &SqliteStore) {
    for t in 0..THREADS {
        for i in 0..PER_THREAD {
            let id = format!("ex_{t}_{i}");
            assert!(store.get_execution(&id).unwrap().is_some(), "{id} missing");
        }
    }
    assert_eq!(
        store.interrupt_executions(None).unwrap(),
        (THREADS * PER_THREAD) as u64
    );
    assert_eq!(store.recent_logs(&sid(1), 1000).unwrap().len(), 50);
}

#[test]
fn one_store_shared_by_eight_threads() {
    let store = Arc::new(mem());
    store
        .put_sandbox(&bare_sandbox(sid(1), 1, SandboxStatus::Running))
        .unwrap();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let store = Arc::clone(&store);
            s.spawn(move || insert_many(&store, t));
        }
    });
    assert_all_inserted(&store);
}

#[test]
fn eight_connections_to_one_file_wait_for_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let store = SqliteStore::open(&path).unwrap();
        store
            .put_sandbox(&bare_sandbox(sid(1), 1, SandboxStatus::Running))
            .unwrap();
    }
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let path = &path;
            // Each thread opens its own connection: SQLite's locks, not our mutex, decide.
            s.spawn(move || insert_many(&SqliteStore::open(path).unwrap(), t));
        }
    });
    assert_all_inserted(&SqliteStore::open(&path).unwrap());
}
