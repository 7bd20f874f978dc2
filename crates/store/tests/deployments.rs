//! Behaviour of `SqliteStore` through the `DeploymentStore` port, and the upgrade of a
//! database made before deployments existed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use quantbox_sandbox::{
    AutoScale, DeploymentConfig, DeploymentEvent, DeploymentId, DeploymentRecord, DeploymentStatus,
    DeploymentStore, ExecStatus, ExecutionRecord, LogLine, SandboxId, SandboxRecord, SandboxStatus,
    SandboxStore, StopReason, Stream, Timestamp,
};
use quantbox_store::SqliteStore;
use serde_json::json;

// ---------------------------------------------------------------------------------------
// Fixtures

fn did(n: u32) -> DeploymentId {
    DeploymentId::parse(&format!("dep_{n:016}")).unwrap()
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

/// A record with every collection filled, unicode everywhere and extreme numbers.
fn full_deployment(id: DeploymentId, created_ms: i64) -> DeploymentRecord {
    DeploymentRecord {
        id,
        template: "python-3.12 “策略”".into(),
        category: "trading".into(),
        config: DeploymentConfig {
            memory_mb: u64::MAX,
            // 0.30000000000000004: needs all 17 significant digits.
            cpu_count: 0.1 + 0.2,
            timeout_s: u64::MAX - 1,
            env_vars: map(&[
                ("PATH", "/usr/bin:/bin"),
                ("ÜNICODE", "值 \"q\" \n newline \t tab \\ backslash"),
                ("", "empty key"),
            ]),
            files: map(&[
                ("/home/user/strategy.py", "print('héllo')\n# 日本語\n"),
                ("/etc/app/config.json", "{\"k\": [1, 2.5, null]}"),
                ("/tmp/empty", ""),
            ]),
            setup_commands: vec![
                "pip install -r requirements.txt".into(),
                "echo 'it''s \"quoted\"' > /tmp/x && cat /tmp/x".into(),
                String::new(),
                "printf 'α\\nβ\\n'".into(),
            ],
            setup_user: "root".into(),
            metadata: map(&[
                ("owner", "agent-7"),
                ("a.b", "dotted"),
                ("it's \"x\"", "quoted ✓"),
            ]),
        },
        status: DeploymentStatus::Deleted,
        desired_instances: u32::MAX,
        auto_scale: AutoScale {
            enabled: true,
            min_instances: u32::MAX - 1,
            max_instances: u32::MAX,
            target_cpu_percent: 100.0 / 3.0,
        },
        created_at: ts(created_ms),
        updated_at: ts(created_ms + 98_765),
    }
}

/// A record with every collection empty and default settings.
fn bare_deployment(id: DeploymentId, created_ms: i64) -> DeploymentRecord {
    DeploymentRecord {
        id,
        template: "base".into(),
        category: "custom".into(),
        config: DeploymentConfig::default(),
        status: DeploymentStatus::Deployed,
        desired_instances: 0,
        auto_scale: AutoScale::default(),
        created_at: ts(created_ms),
        updated_at: ts(created_ms),
    }
}

fn event(ms: i64, kind: &str, message: &str, details: serde_json::Value) -> DeploymentEvent {
    DeploymentEvent {
        at: ts(ms),
        kind: kind.into(),
        message: message.into(),
        details,
    }
}

fn ids(records: &[DeploymentRecord]) -> Vec<DeploymentId> {
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

/// `PartialEq` says 0.0 == -0.0; this says whether the bits came back.
fn assert_bits(got: f64, want: f64, what: &str) {
    assert_eq!(
        got.to_bits(),
        want.to_bits(),
        "{what}: got {got:e}, want {want:e}"
    );
}

// ---------------------------------------------------------------------------------------
// Records

#[test]
fn deployment_records_round_trip_every_field() {
    let store = mem();
    let full = full_deployment(did(1), 1_795_000_000_123);
    let bare = bare_deployment(did(2), -5);
    store.put_deployment(&full).unwrap();
    store.put_deployment(&bare).unwrap();
    let got = store.get_deployment(&full.id).unwrap().unwrap();
    assert_eq!(got, full);
    assert_bits(got.config.cpu_count, full.config.cpu_count, "cpu_count");
    assert_bits(
        got.auto_scale.target_cpu_percent,
        full.auto_scale.target_cpu_percent,
        "target_cpu_percent",
    );
    assert_eq!(store.get_deployment(&bare.id).unwrap().unwrap(), bare);
}

#[test]
fn integers_and_floats_round_trip_exactly() {
    let store = mem();
    let floats = [
        0.0,
        -0.0,
        0.1,
        1.0 / 3.0,
        2.0 / 3.0,
        1e-300,
        // The smallest subnormal, and the largest.
        f64::from_bits(1),
        f64::from_bits(0x000f_ffff_ffff_ffff),
        f64::MIN_POSITIVE,
        f64::MAX,
        f64::MIN,
        f64::EPSILON,
        // 2^53 + 2 and its neighbour below: integers past exact-integer range.
        9_007_199_254_740_994.0,
        9_007_199_254_740_992.0,
        123_456_789.123_456_78,
        -7.5,
        // Values that serde_json's default (not `float_roundtrip`) parser reads one bit
        // off.
        1.0715660391465826e-75,
        -1.603964615428183e143,
        1.5860846119992697e-265,
        -9.643915712060552e-234,
    ];
    let ints = [0, 1, i32::MAX as u32, i32::MAX as u32 + 1, u32::MAX];
    for (i, &x) in floats.iter().enumerate() {
        let n = ints[i % ints.len()];
        let mut d = bare_deployment(did(i as u32), 0);
        d.config.cpu_count = x;
        d.auto_scale.target_cpu_percent = x;
        d.desired_instances = n;
        d.auto_scale.min_instances = ints[(i + 1) % ints.len()];
        d.auto_scale.max_instances = ints[(i + 2) % ints.len()];
        d.auto_scale.enabled = i % 2 == 0;
        store.put_deployment(&d).unwrap();
        let got = store.get_deployment(&d.id).unwrap().unwrap();
        assert_eq!(got, d, "value {x:e}");
        assert_bits(got.config.cpu_count, x, "config.cpu_count");
        if x == 0.0 && x.is_sign_negative() {
            // SQLite writes a REAL with no fraction as an integer, and an integer has no
            // negative zero: -0.0 reads back as 0.0, which `==` (and the record) agrees is
            // the same value.
            assert_eq!(got.auto_scale.target_cpu_percent, 0.0);
        } else {
            assert_bits(got.auto_scale.target_cpu_percent, x, "target_cpu_percent");
        }
    }

    // A few thousand more, bit patterns from a fixed xorshift sequence.
    let mut bits: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut d = bare_deployment(did(99), 0);
    let mut checked = 0;
    while checked < 3000 {
        bits ^= bits << 13;
        bits ^= bits >> 7;
        bits ^= bits << 17;
        let x = f64::from_bits(bits);
        if !x.is_finite() || x == 0.0 {
            continue;
        }
        d.config.cpu_count = x;
        d.auto_scale.target_cpu_percent = -x;
        d.desired_instances = bits as u32;
        store.put_deployment(&d).unwrap();
        let got = store.get_deployment(&d.id).unwrap().unwrap();
        assert_bits(got.config.cpu_count, x, "config.cpu_count");
        assert_bits(got.auto_scale.target_cpu_percent, -x, "target_cpu_percent");
        assert_eq!(got.desired_instances, bits as u32);
        checked += 1;
    }

    // Infinity is a REAL that SQLite keeps (only the JSON config cannot hold it).
    let mut d = bare_deployment(did(100), 0);
    d.auto_scale.target_cpu_percent = f64::INFINITY;
    store.put_deployment(&d).unwrap();
    assert_eq!(store.get_deployment(&d.id).unwrap().unwrap(), d);
}

#[test]
fn values_that_would_not_read_back_are_refused_on_write() {
    let store = mem();
    let cases: Vec<(DeploymentRecord, &str)> = vec![
        (
            {
                let mut d = bare_deployment(did(1), 0);
                d.config.cpu_count = f64::NAN;
                d
            },
            "config.cpu_count",
        ),
        (
            {
                let mut d = bare_deployment(did(1), 0);
                d.config.cpu_count = f64::NEG_INFINITY;
                d
            },
            "config.cpu_count",
        ),
        (
            {
                let mut d = bare_deployment(did(1), 0);
                d.auto_scale.target_cpu_percent = f64::NAN;
                d
            },
            "target_cpu_percent",
        ),
    ];
    for (d, column) in cases {
        let err = store.put_deployment(&d).unwrap_err().to_string();
        assert!(
            err.contains(&format!("insert deployment {}: {column}:", did(1))),
            "{err}"
        );
        assert!(store.get_deployment(&did(1)).unwrap().is_none());
    }
}

#[test]
fn put_deployment_replaces_the_whole_record_in_place() {
    let store = mem();
    let first = full_deployment(did(1), 100);
    store.put_deployment(&first).unwrap();
    // Events referencing the deployment must not stop it from being replaced.
    let ev = event(1, "deployed", "ok", json!({}));
    store.append_deployment_event(&first.id, &ev).unwrap();

    let mut second = bare_deployment(did(1), 200);
    second.template = "renamed".into();
    second.desired_instances = 3;
    store.put_deployment(&second).unwrap();

    assert_eq!(store.get_deployment(&first.id).unwrap().unwrap(), second);
    assert_eq!(ids(&store.list_deployments(true).unwrap()), vec![did(1)]);
    assert_eq!(store.deployment_events(&first.id, 10).unwrap(), vec![ev]);
}

#[test]
fn unknown_deployments_are_none_and_have_no_events() {
    let store = mem();
    store.put_deployment(&full_deployment(did(1), 1)).unwrap();
    store
        .append_deployment_event(&did(1), &event(1, "deployed", "", json!(null)))
        .unwrap();
    assert!(store.get_deployment(&did(2)).unwrap().is_none());
    assert!(store.deployment_events(&did(2), 10).unwrap().is_empty());
}

#[test]
fn list_is_newest_first_then_by_id_and_hides_deleted_unless_asked() {
    let store = mem();
    let deleted = [2, 4];
    for (n, created) in [(1, 100), (2, 300), (3, 200), (5, 300), (4, 300), (6, -1)] {
        let mut d = bare_deployment(did(n), created);
        if deleted.contains(&n) {
            d.status = DeploymentStatus::Deleted;
        }
        store.put_deployment(&d).unwrap();
    }
    assert_eq!(
        ids(&store.list_deployments(true).unwrap()),
        vec![did(2), did(4), did(5), did(3), did(1), did(6)]
    );
    assert_eq!(
        ids(&store.list_deployments(false).unwrap()),
        vec![did(5), did(3), did(1), did(6)]
    );

    // Deleting is a status change: the record leaves the default list and stays in the
    // full one.
    let mut d = store.get_deployment(&did(5)).unwrap().unwrap();
    d.status = DeploymentStatus::Deleted;
    store.put_deployment(&d).unwrap();
    assert_eq!(
        ids(&store.list_deployments(false).unwrap()),
        vec![did(3), did(1), did(6)]
    );
    assert_eq!(store.list_deployments(true).unwrap().len(), 6);
    assert!(mem().list_deployments(true).unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------
// Events

#[test]
fn events_are_the_last_n_oldest_first_per_deployment() {
    let store = mem();
    let (a, b) = (did(1), did(2));
    store
        .put_deployment(&bare_deployment(a.clone(), 1))
        .unwrap();
    store
        .put_deployment(&bare_deployment(b.clone(), 2))
        .unwrap();
    // Equal and out-of-order times: order is append order, not `at`.
    let events = vec![
        event(50, "deployed", "3 instances", json!({"instances": 3})),
        event(
            50,
            "autoscale_up",
            "mean CPU 91.5% > 70%",
            json!({"mean_cpu": 91.5, "ids": ["sb1", "sb2"], "exact": 0.30000000000000004}),
        ),
        event(
            10,
            "instance_failed",
            "setup failed: „x“",
            json!({"error": "exit 1\nline two", "nested": {"ü": [null, true, -1]}}),
        ),
        event(70, "scaled", "", json!(null)),
        event(80, "deleted", "bye", json!("just a string")),
    ];
    for (i, e) in events.iter().enumerate() {
        store.append_deployment_event(&a, e).unwrap();
        // Another deployment's events interleave but are not counted as `a`'s.
        store
            .append_deployment_event(&b, &event(i as i64, "scaled", "b", json!(i)))
            .unwrap();
    }
    assert_eq!(
        store.deployment_events(&a, 2).unwrap(),
        events[3..].to_vec()
    );
    assert_eq!(
        store.deployment_events(&a, 4).unwrap(),
        events[1..].to_vec()
    );
    assert_eq!(store.deployment_events(&a, 5).unwrap(), events);
    assert_eq!(store.deployment_events(&a, usize::MAX).unwrap(), events);
    assert!(store.deployment_events(&a, 0).unwrap().is_empty());
    let of_b = store.deployment_events(&b, 100).unwrap();
    assert_eq!(
        of_b.iter().map(|e| e.details.clone()).collect::<Vec<_>>(),
        (0..5).map(|i| json!(i)).collect::<Vec<_>>()
    );
}

#[test]
fn an_event_for_an_unknown_deployment_is_refused() {
    let store = mem();
    store.put_deployment(&bare_deployment(did(1), 1)).unwrap();
    let err = store
        .append_deployment_event(&did(9), &event(1, "scaled", "x", json!({})))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&did(9).to_string()), "{err}");
    assert!(err.contains("no such deployment"), "{err}");
    // Nothing was kept for later: a deployment created with that id starts empty.
    store.put_deployment(&bare_deployment(did(9), 2)).unwrap();
    assert!(store.deployment_events(&did(9), 10).unwrap().is_empty());
    assert!(store.deployment_events(&did(1), 10).unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------
// Files, migrations, damaged rows

#[test]
fn a_file_database_keeps_deployments_and_events_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let full = full_deployment(did(1), 42);
    let bare = bare_deployment(did(2), 43);
    let events = vec![
        event(1, "deployed", "ok ✓", json!({"n": 2})),
        event(
            2,
            "replaced",
            "sb1 → sb3",
            json!({"old": "sb1", "new": "sb3"}),
        ),
    ];
    {
        let store = SqliteStore::open(&path).unwrap();
        store.put_deployment(&full).unwrap();
        store.put_deployment(&bare).unwrap();
        for e in &events {
            store.append_deployment_event(&full.id, e).unwrap();
        }
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.get_deployment(&full.id).unwrap().unwrap(), full);
    assert_eq!(
        store.list_deployments(true).unwrap(),
        vec![bare, full.clone()]
    );
    assert_eq!(store.deployment_events(&full.id, 10).unwrap(), events);
    // Appending after reopening continues the same log.
    let later = event(3, "deleted", "", json!(null));
    store.append_deployment_event(&full.id, &later).unwrap();
    assert_eq!(store.deployment_events(&full.id, 1).unwrap(), vec![later]);
}

/// Makes, with raw SQL only, the database a quantbox that knew schema version 1 left: its
/// tables, its `schema_migrations` row, and one sandbox with an execution and a log line.
fn make_v1_database(path: &Path) {
    let conn = raw(path);
    conn.execute_batch(
        "CREATE TABLE schema_migrations (
             version    INTEGER PRIMARY KEY,
             applied_at INTEGER
         );",
    )
    .unwrap();
    conn.execute_batch(include_str!("../migrations/0001_sandboxes.sql"))
        .unwrap();
    conn.execute_batch(
        "INSERT INTO schema_migrations (version, applied_at) VALUES (1, 1700000000000);
         INSERT INTO sandboxes VALUES (
             'sb000000000000000001', '旧 sandbox', 'base', 'local', 'stopped', 'expired',
             512, 0.5, 64, 600, '{\"K\":\"v\"}', '{\"owner\":\"me\"}', 'dep-old',
             1000, 601000, 700000, '{\"pid\":7}');
         INSERT INTO executions VALUES (
             'ex_old', 'sb000000000000000001', 'echo', '[\"hi\"]', NULL, 'user', 'finished',
             99, 0, NULL, 0, 0, 0, X'68690a', X'', 0, 0, NULL, 2000, 2100);
         INSERT INTO log_lines (sandbox_id, at, stream, line)
             VALUES ('sb000000000000000001', 2050, 'stdout', 'hi');",
    )
    .unwrap();
}

fn schema_versions(path: &Path) -> Vec<(i64, Option<i64>)> {
    let conn = raw(path);
    let mut stmt = conn
        .prepare("SELECT version, applied_at FROM schema_migrations ORDER BY version")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Every table and index definition, by name.
fn schema(path: &Path) -> Vec<(String, String)> {
    let conn = raw(path);
    let mut stmt = conn
        .prepare(
            "SELECT name, sql FROM sqlite_master
             WHERE sql IS NOT NULL AND name <> 'schema_migrations' ORDER BY name",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn a_version_1_database_upgrades_and_keeps_its_sandboxes() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    make_v1_database(&path);
    assert_eq!(schema_versions(&path), vec![(1, Some(1_700_000_000_000))]);

    let store = SqliteStore::open(&path).unwrap();
    // Version 1 untouched, version 2 applied on top.
    let versions = schema_versions(&path);
    assert_eq!(versions[0], (1, Some(1_700_000_000_000)));
    assert_eq!(
        versions.iter().map(|v| v.0).collect::<Vec<_>>(),
        (1..=versions.len() as i64).collect::<Vec<_>>()
    );
    assert!(versions.len() >= 2, "{versions:?}");

    // The old rows read back as before.
    let sb = SandboxId::parse("sb000000000000000001").unwrap();
    let got: SandboxRecord = store.get_sandbox(&sb).unwrap().unwrap();
    assert_eq!(got.name, "旧 sandbox");
    assert_eq!(got.status, SandboxStatus::Stopped);
    assert_eq!(got.stop_reason, Some(StopReason::Expired));
    assert_eq!(got.resources.memory_mb, 512);
    assert_eq!(got.resources.cpu_count, 0.5);
    assert_eq!(got.env_vars, map(&[("K", "v")]));
    assert_eq!(got.metadata, map(&[("owner", "me")]));
    assert_eq!(got.deployment_id.as_deref(), Some("dep-old"));
    assert_eq!(got.stopped_at, Some(ts(700_000)));
    assert_eq!(got.runtime, json!({"pid": 7}));
    let ex: ExecutionRecord = store.get_execution("ex_old").unwrap().unwrap();
    assert_eq!(ex.status, ExecStatus::Finished);
    assert_eq!(ex.outcome.stdout, b"hi\n");
    assert_eq!(ex.args, vec!["hi".to_string()]);
    assert_eq!(
        store.recent_logs(&sb, 10).unwrap(),
        vec![LogLine {
            at: ts(2050),
            stream: Stream::Stdout,
            line: "hi".into(),
        }]
    );

    // Deployments work in the upgraded file, and sandboxes still take writes.
    let d = full_deployment(did(1), 5);
    store.put_deployment(&d).unwrap();
    let ev = event(6, "deployed", "", json!({}));
    store.append_deployment_event(&d.id, &ev).unwrap();
    let mut sandbox = got.clone();
    sandbox.name = "renamed".into();
    store.put_sandbox(&sandbox).unwrap();
    drop(store);

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(schema_versions(&path), versions, "a migration ran twice");
    assert_eq!(store.get_deployment(&d.id).unwrap().unwrap(), d);
    assert_eq!(store.deployment_events(&d.id, 10).unwrap(), vec![ev]);
    assert_eq!(store.get_sandbox(&sb).unwrap().unwrap().name, "renamed");

    // The upgraded schema is the one a new database gets.
    let fresh = dir.path().join("fresh.db");
    drop(SqliteStore::open(&fresh).unwrap());
    assert_eq!(schema(&path), schema(&fresh));
}

/// Reads through the store and returns the error it gives.
type Reader<'a> = &'a dyn Fn(&SqliteStore) -> String;

#[test]
fn damaged_deployment_rows_are_errors_naming_table_id_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let store = SqliteStore::open(&path).unwrap();
        store.put_deployment(&full_deployment(did(1), 1)).unwrap();
        store
            .append_deployment_event(&did(1), &event(1, "deployed", "", json!({})))
            .unwrap();
    }
    let get = |s: &SqliteStore| s.get_deployment(&did(1)).unwrap_err().to_string();
    let list = |s: &SqliteStore| s.list_deployments(true).unwrap_err().to_string();
    let events = |s: &SqliteStore| s.deployment_events(&did(1), 10).unwrap_err().to_string();
    let dep = did(1).to_string();
    let cases: Vec<(&str, Reader<'_>, &str, &str, &str)> = vec![
        (
            "UPDATE deployments SET status = 'exploded'",
            &get,
            "deployments",
            &dep,
            "status",
        ),
        (
            "UPDATE deployments SET config = '{not json'",
            &list,
            "deployments",
            &dep,
            "config",
        ),
        (
            // Valid JSON of the wrong shape.
            "UPDATE deployments SET config = '{\"memory_mb\": -1}'",
            &get,
            "deployments",
            &dep,
            "config",
        ),
        (
            "UPDATE deployments SET desired_instances = -1",
            &get,
            "deployments",
            &dep,
            "desired_instances",
        ),
        (
            "UPDATE deployments SET max_instances = 4294967296",
            &list,
            "deployments",
            &dep,
            "max_instances",
        ),
        (
            "UPDATE deployment_events SET details = ''",
            &events,
            "deployment_events",
            "1",
            "details",
        ),
        (
            "UPDATE deployments SET id = 'dep_BAD'",
            &list,
            "deployments",
            "dep_BAD",
            "id",
        ),
    ];
    // Each case starts from a fresh copy of the good database.
    let good = std::fs::read(&path).unwrap();
    for (sql, read, table, id, column) in cases {
        std::fs::write(&path, &good).unwrap();
        // Off, so that renaming a deployment does not trip its events' foreign key.
        raw(&path)
            .execute_batch(&format!("PRAGMA foreign_keys = OFF; {sql}"))
            .unwrap();
        let err = read(&SqliteStore::open(&path).unwrap());
        let want = format!("decode {table} {id}: column {column}:");
        assert!(err.contains(&want), "after `{sql}`: {err}\nwanted `{want}`");
    }
}
