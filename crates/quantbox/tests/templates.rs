//! Templates: export a sandbox (installed and deleted files survive, the home directory
//! only when asked, /tmp never, the source keeps running), import a root filesystem from
//! a directory or a tar archive, defaults and start commands, and deletion rules.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Engine, require_root};
use serde_json::{Value, json};

async fn export(
    e: &Engine,
    id: &str,
    name: &str,
    include_data: bool,
) -> Result<Value, quantbox_ops::OpError> {
    e.call(
        "export_e2b_template",
        json!({"sandbox_id": id, "template_name": name, "include_data": include_data}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_template_has_the_sandboxs_changes_and_deletions() {
    if !require_root("an_exported_template_has_the_sandboxs_changes_and_deletions") {
        return;
    }
    let e = Engine::start().await;
    let src = e.create(json!({"name": "builder", "memory_mb": 256})).await;
    // "Install" software as root (into the root and the /usr layers), delete a file of
    // each layer, write data into the home and /tmp.
    e.ok_as(
        &src,
        "mkdir -p /usr/local/bin /opt/tool && printf '#!/bin/sh\\necho tool works\\n' > /usr/local/bin/qbtool && \
         chmod 755 /usr/local/bin/qbtool && head -c 5000000 /dev/urandom > /opt/tool/blob && echo conf > /etc/qb.conf && \
         rm /etc/inputrc /usr/bin/yes && mkdir -p /etc/emptied && chown user /opt/tool",
        "root",
    )
    .await;
    e.ok(
        &src,
        "echo mine > /home/user/data.txt; echo scratch > /tmp/scratch",
    )
    .await;
    let out = export(&e, &src, "tooled", false).await.unwrap();
    assert_eq!(
        (out["template_name"].as_str(), out["base_template"].as_str()),
        (Some("tooled"), Some("base")),
        "{out}"
    );
    assert_eq!(out["include_data"], false);
    let size = out["size_mb"].as_f64().unwrap();
    assert!(
        (4.7..6.0).contains(&size),
        "size_mb {size} does not match the 5 MB written"
    );
    assert!(out["files_count"].as_u64().unwrap() >= 6, "{out}");
    // The source keeps running, unfrozen.
    assert_eq!(e.ok(&src, "echo still running").await, "still running\n");
    assert_eq!(e.status(&src).await["status"], "running");

    let new = e.create(json!({"template": "tooled"})).await;
    assert_eq!(
        e.ok(
            &new,
            "qbtool; cat /etc/qb.conf; stat -c %U /opt/tool; wc -c < /opt/tool/blob"
        )
        .await,
        "tool works\nconf\nuser\n5000000\n"
    );
    for gone in [
        "/etc/inputrc",
        "/usr/bin/yes",
        "/home/user/data.txt",
        "/tmp/scratch",
    ] {
        let r = e.sh(&new, &format!("ls {gone}")).await;
        assert_ne!(
            r["exit_code"], 0,
            "{gone} came back in the new sandbox: {r}"
        );
    }
    assert_eq!(
        e.ok(&new, "ls -d /etc/emptied && ls /home/user -a | wc -l")
            .await,
        "/etc/emptied\n5\n"
    );
    // With its data, the home comes along; /tmp still does not.
    let out = export(&e, &src, "tooled-data", true).await.unwrap();
    assert_eq!(out["include_data"], true);
    let with_data = e.create(json!({"template": "tooled-data"})).await;
    assert_eq!(
        e.ok(&with_data, "cat /home/user/data.txt; ls /tmp | wc -l")
            .await,
        "mine\n0\n"
    );
    // Listed, with its base, its size and whether it is in use.
    let list = e.app().ops.list_templates().unwrap();
    let t = list["templates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "tooled")
        .unwrap()
        .clone();
    assert_eq!(
        (
            t["base_template"].as_str(),
            t["in_use"].as_bool(),
            t["builtin"].as_bool()
        ),
        (Some("base"), Some(true), Some(false)),
        "{t}"
    );
    assert_eq!(t["layers"], 2);
    let names: Vec<&str> = list["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"base") && names.contains(&"python"),
        "{names:?}"
    );
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_and_deletions_are_refused_when_they_must_be() {
    if !require_root("exports_and_deletions_are_refused_when_they_must_be") {
        return;
    }
    let e = Engine::start().await;
    let id = e.create(json!({})).await;
    let ops = &e.app().ops;
    export(&e, &id, "t1", false).await.unwrap();
    for (args, code, words) in [
        (
            json!({"sandbox_id": id, "template_name": "t1"}),
            "already_exists",
            "exists",
        ),
        (
            json!({"sandbox_id": id, "template_name": "a/b"}),
            "invalid_argument",
            "template_name",
        ),
        (
            json!({"sandbox_id": id, "template_name": ".hidden"}),
            "invalid_argument",
            "template_name",
        ),
        (
            json!({"sandbox_id": id, "template_name": "base"}),
            "already_exists",
            "exists",
        ),
        (
            json!({"sandbox_id": "aaaaaaaaaaaaaaaaaaaa", "template_name": "t2"}),
            "not_found",
            "aaaaaaaaaaaaaaaaaaaa",
        ),
        (
            json!({"sandbox_id": id, "template_name": "t2", "include_data": "yes"}),
            "invalid_argument",
            "include_data",
        ),
    ] {
        let err = e
            .call("export_e2b_template", args.clone())
            .await
            .unwrap_err();
        assert_eq!(err.code.as_str(), code, "{args}: {}", err.message);
        assert!(err.message.contains(words), "{args}: {}", err.message);
    }
    // A template in use by a sandbox or a deployment cannot be deleted.
    let user = e.create(json!({"template": "t1"})).await;
    let err = ops.delete_template("t1").await.unwrap_err();
    assert_eq!(err.code.as_str(), "failed_precondition", "{}", err.message);
    e.terminate(&user).await;
    let dep = e
        .call("deploy_e2b_template", json!({"template_name": "t1", "category": "custom", "configuration": {"memory_mb": 64}}))
        .await
        .unwrap();
    let err = ops.delete_template("t1").await.unwrap_err();
    assert!(err.message.contains("in use"), "{}", err.message);
    ops.delete_deployment(dep["deployment_id"].as_str().unwrap())
        .await
        .unwrap();
    ops.delete_template("t1").await.unwrap();
    assert_eq!(
        ops.delete_template("t1").await.unwrap_err().code.as_str(),
        "not_found"
    );
    assert_eq!(
        ops.delete_template("base").await.unwrap_err().code.as_str(),
        "failed_precondition"
    );
    let err = e
        .call("create_e2b_sandbox", json!({"name": "x", "template": "t1"}))
        .await
        .unwrap_err();
    assert_eq!(err.code.as_str(), "not_found");
    e.shutdown().await;
}

/// A minimal root filesystem: dash and the C library, with merged-/usr links.
fn minimal_rootfs(dir: &Path) {
    let lib = dir.join("usr/lib/x86_64-linux-gnu");
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
    std::fs::create_dir_all(dir.join("usr/lib64")).unwrap();
    std::fs::copy("/usr/bin/dash", dir.join("usr/bin/dash")).unwrap();
    std::os::unix::fs::symlink("dash", dir.join("usr/bin/sh")).unwrap();
    std::fs::copy("/usr/lib/x86_64-linux-gnu/libc.so.6", lib.join("libc.so.6")).unwrap();
    std::fs::copy(
        "/usr/lib64/ld-linux-x86-64.so.2",
        dir.join("usr/lib64/ld-linux-x86-64.so.2"),
    )
    .unwrap();
    for (link, target) in [
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        std::os::unix::fs::symlink(target, dir.join(link)).unwrap();
    }
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/motd"), "from an imported rootfs\n").unwrap();
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_root_filesystem_boots_sandboxes_with_its_defaults() {
    if !require_root("an_imported_root_filesystem_boots_sandboxes_with_its_defaults") {
        return;
    }
    if !Path::new("/usr/lib64/ld-linux-x86-64.so.2").exists() {
        panic!("this test builds its root filesystem from the host's x86_64 glibc");
    }
    let e = Engine::start().await;
    let ops = &e.app().ops;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("rootfs");
    minimal_rootfs(&dir);
    let imported = ops
        .import_template(
            serde_json::from_value(json!({
                "name": "tiny", "source": dir.to_str().unwrap(), "memory_mb": 96,
                "env_vars": {"FLAVOUR": "tiny"}, "start_command": "echo started > /tmp/started",
                "metadata": {"origin": "import"}
            }))
            .unwrap(),
            std::sync::Arc::new(|_, _| {}),
        )
        .await
        .unwrap();
    assert_eq!(
        (imported["name"].as_str(), imported["layers"].as_i64()),
        (Some("tiny"), Some(1)),
        "{imported}"
    );
    // The same tree as a tar archive.
    let tar = work.path().join("rootfs.tar");
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    ops.import_template(
        serde_json::from_value(json!({"name": "tiny-tar", "source": tar.to_str().unwrap()}))
            .unwrap(),
        std::sync::Arc::new(|_, _| {}),
    )
    .await
    .unwrap();
    for t in ["tiny", "tiny-tar"] {
        // No memory_mb: the template's default applies.
        let out = e
            .call("create_e2b_sandbox", json!({"name": t, "template": t}))
            .await
            .unwrap();
        let id = out["sandbox_id"].as_str().unwrap().to_owned();
        let r = e
            .call(
                "execute_e2b_process",
                json!({"sandbox_id": id, "command": "read l < /etc/motd; echo $l $FLAVOUR"}),
            )
            .await
            .unwrap();
        let expect = if t == "tiny" {
            "from an imported rootfs tiny\n"
        } else {
            "from an imported rootfs\n"
        };
        assert_eq!(r["stdout"], expect, "{t}: {r}");
        if t == "tiny" {
            // The template's defaults apply where the caller says nothing.
            let st = e.status(&id).await;
            assert_eq!(st["resource_usage"]["memory_limit_mb"], 96.0, "{st}");
            let list = e
                .call(
                    "list_e2b_sandboxes",
                    json!({"metadata": {"origin": "import"}}),
                )
                .await
                .unwrap();
            assert_eq!(list["total_count"], 1);
            // And its start command ran.
            let id2 = id.clone();
            let e2 = &e;
            let mut seen = false;
            for _ in 0..50 {
                let r = e2
                    .call(
                        "execute_e2b_process",
                        json!({"sandbox_id": id2, "command": "read l < /tmp/started && echo $l"}),
                    )
                    .await
                    .unwrap();
                if r["stdout"] == "started\n" {
                    seen = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(seen, "the template's start command did not run");
        }
    }
    // A hostile archive is refused with the entry and the reason, and nothing is made.
    let evil = work.path().join("evil.tar");
    let st = std::process::Command::new("tar")
        .args([
            "-cf",
            evil.to_str().unwrap(),
            "-P",
            "--transform",
            "s|^|/|",
            "-C",
        ])
        .arg(work.path())
        .arg("rootfs/etc/motd")
        .status()
        .unwrap();
    assert!(st.success());
    let err = ops
        .import_template(
            serde_json::from_value(json!({"name": "evil", "source": evil.to_str().unwrap()}))
                .unwrap(),
            std::sync::Arc::new(|_, _| {}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code.as_str(), "invalid_argument", "{}", err.message);
    assert!(err.message.contains("absolute"), "{}", err.message);
    assert!(
        !ops.list_templates()
            .unwrap()
            .to_string()
            .contains("\"evil\"")
    );
    e.shutdown().await;
}
