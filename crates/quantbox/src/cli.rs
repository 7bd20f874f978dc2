//! Command-line parsing and dispatch. Server commands build the engine in-process;
//! `sandbox` verbs are a thin REST client of a running server.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::app::{EngineConfig, default_data_dir};

#[derive(Parser)]
#[command(
    name = "quantbox",
    version,
    about = "Sandboxes and monitoring for AI trading agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct EngineArgs {
    /// Where the database, templates and sandboxes' files live [default: /var/lib/quantbox as root, else ~/.local/share/quantbox]
    #[arg(long, env = "QUANTBOX_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Most sandboxes active at once.
    #[arg(long, env = "QUANTBOX_MAX_SANDBOXES", default_value_t = 1000)]
    pub max_sandboxes: usize,
    /// Most processes and threads per sandbox.
    #[arg(long, env = "QUANTBOX_PIDS_MAX", default_value_t = 512)]
    pub pids_max: u64,
    /// Seconds between SIGTERM and SIGKILL when a sandbox is terminated without force.
    #[arg(long, default_value_t = 5)]
    pub terminate_grace_s: u64,
    /// Name of the cgroup that holds the sandboxes' cgroups.
    #[arg(long, env = "QUANTBOX_CGROUP_PARENT", default_value = "quantbox")]
    pub cgroup_parent: String,
    /// Sandboxes kept started and parked so that creating one is fast (0: none).
    #[arg(long, env = "QUANTBOX_WARM_POOL", default_value_t = 2)]
    pub warm_pool: usize,
    /// Seconds between two samples of a deployment's auto-scaler.
    #[arg(long, env = "QUANTBOX_AUTOSCALE_INTERVAL_S", default_value_t = 10.0)]
    pub autoscale_interval_s: f64,
}

impl EngineArgs {
    pub fn config(&self) -> EngineConfig {
        EngineConfig {
            data_dir: self.data_dir.clone().unwrap_or_else(default_data_dir),
            max_sandboxes: self.max_sandboxes,
            pids_max: self.pids_max,
            terminate_grace: Duration::from_secs(self.terminate_grace_s),
            init_exe: std::env::var_os("QUANTBOX_INIT_EXE").map(PathBuf::from),
            cgroup_parent: self.cgroup_parent.clone(),
            warm_pool: self.warm_pool,
            autoscale_interval: Duration::from_secs_f64(self.autoscale_interval_s.max(0.05)),
        }
    }
}

#[derive(Args, Clone)]
pub struct ClientArgs {
    /// URL of the quantbox server.
    #[arg(
        long,
        env = "QUANTBOX_URL",
        default_value = "http://127.0.0.1:7400",
        global = true
    )]
    pub url: String,
    /// API key of the server (needed when it listens beyond loopback).
    #[arg(long, env = "QUANTBOX_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server: REST under /api/v1 and MCP (streamable HTTP) at /mcp.
    Serve {
        /// Address to listen on. Beyond loopback, QUANTBOX_API_KEY is required.
        #[arg(long, env = "QUANTBOX_LISTEN", default_value = "127.0.0.1:7400")]
        listen: SocketAddr,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Serve MCP over stdio (for desktop assistants); logs go to stderr.
    Mcp {
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Work with sandboxes on a running server.
    Sandbox {
        #[command(subcommand)]
        verb: SandboxVerb,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Measure sandbox start-up, exec and terminate latency and idle memory.
    Bench(crate::bench::BenchArgs),
}

#[derive(Subcommand)]
enum SandboxVerb {
    /// Create and start a sandbox.
    Create {
        /// 1 to 64 characters of [A-Za-z0-9._-].
        name: String,
        #[arg(long)]
        template: Option<String>,
        /// Lifetime in seconds.
        #[arg(long)]
        timeout: Option<i64>,
        #[arg(long)]
        memory_mb: Option<i64>,
        #[arg(long)]
        cpu_count: Option<f64>,
        /// KEY=VALUE, repeatable.
        #[arg(long = "env", value_parser = parse_pair)]
        env: Vec<(String, String)>,
        /// KEY=VALUE, repeatable.
        #[arg(long = "metadata", value_parser = parse_pair)]
        metadata: Vec<(String, String)>,
        #[arg(long)]
        provider: Option<String>,
    },
    /// List sandboxes.
    List {
        /// running, paused, stopped or all.
        #[arg(long)]
        status: Option<String>,
        /// KEY=VALUE, repeatable: only sandboxes with all these pairs.
        #[arg(long = "metadata", value_parser = parse_pair)]
        metadata: Vec<(String, String)>,
    },
    /// Run a process: one word or a quoted line runs through /bin/sh -c; more words are
    /// executed directly. Exits with the process's exit status.
    Exec {
        sandbox_id: String,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
        /// Seconds before the process is killed.
        #[arg(long)]
        timeout: Option<i64>,
        #[arg(long)]
        cwd: Option<String>,
        /// KEY=VALUE, repeatable.
        #[arg(long = "env", value_parser = parse_pair)]
        env: Vec<(String, String)>,
        /// Text for the process's standard input.
        #[arg(long)]
        stdin: Option<String>,
    },
    /// Status, usage, health and recent logs of a sandbox.
    Status {
        sandbox_id: String,
        #[arg(long)]
        log_lines: Option<i64>,
    },
    /// Terminate a sandbox.
    Terminate {
        sandbox_id: String,
        /// Kill at once instead of SIGTERM and a grace period.
        #[arg(long)]
        force: bool,
    },
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

fn pairs(v: &[(String, String)]) -> Value {
    Value::Object(
        v.iter()
            .map(|(k, val)| (k.clone(), Value::String(val.clone())))
            .collect(),
    )
}

/// Logs go to stderr, always: stdout carries MCP's protocol in `mcp` mode and command
/// output in the CLI.
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("QUANTBOX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<ExitCode> = rt.block_on(async move {
        match cli.command {
            Command::Serve { listen, engine } => {
                init_logging("info");
                crate::serve::serve(listen, engine.config())
                    .await
                    .map(|()| ExitCode::SUCCESS)
            }
            Command::Mcp { engine } => {
                init_logging("warn");
                crate::serve::mcp_stdio(engine.config())
                    .await
                    .map(|()| ExitCode::SUCCESS)
            }
            Command::Bench(args) => {
                init_logging("warn");
                crate::bench::run(args).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Sandbox { verb, client } => {
                init_logging("warn");
                Ok(sandbox(verb, &client).await)
            }
        }
    });
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}

/// A REST client of the server.
struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

/// A failed call: the server's error JSON, or why the server could not be reached.
enum CallError {
    Api { code: String, message: String },
    Transport(String),
}

impl Client {
    fn new(a: &ClientArgs) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: a.url.trim_end_matches('/').to_owned(),
            key: a.api_key.clone(),
        }
    }

    async fn tool(&self, name: &str, args: Value) -> Result<Value, CallError> {
        let mut req = self
            .http
            .post(format!("{}/api/v1/tools/{name}", self.base))
            .json(&args);
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.map_err(|e| {
            CallError::Transport(format!(
                "cannot reach the quantbox server at {} ({e}); start it with `quantbox serve` or set --url / QUANTBOX_URL",
                self.base
            ))
        })?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(|e| {
            CallError::Transport(format!(
                "unreadable answer from {} (HTTP {status}): {e}",
                self.base
            ))
        })?;
        if status.is_success() {
            return Ok(body);
        }
        let err = &body["error"];
        Err(CallError::Api {
            code: err["code"].as_str().unwrap_or("internal").to_owned(),
            message: err["message"]
                .as_str()
                .unwrap_or("the server gave no message")
                .to_owned(),
        })
    }
}

async fn sandbox(verb: SandboxVerb, c: &ClientArgs) -> ExitCode {
    let client = Client::new(c);
    let (tool, args) = match &verb {
        SandboxVerb::Create {
            name,
            template,
            timeout,
            memory_mb,
            cpu_count,
            env,
            metadata,
            provider,
        } => {
            let mut a = json!({"name": name});
            if let Some(t) = template {
                a["template"] = json!(t);
            }
            if let Some(t) = timeout {
                a["timeout"] = json!(t);
            }
            if let Some(m) = memory_mb {
                a["memory_mb"] = json!(m);
            }
            if let Some(cpu) = cpu_count {
                a["cpu_count"] = json!(cpu);
            }
            if !env.is_empty() {
                a["env_vars"] = pairs(env);
            }
            if !metadata.is_empty() {
                a["metadata"] = pairs(metadata);
            }
            if let Some(p) = provider {
                a["provider"] = json!(p);
            }
            ("create_e2b_sandbox", a)
        }
        SandboxVerb::List { status, metadata } => {
            let mut a = json!({});
            if let Some(s) = status {
                a["status_filter"] = json!(s);
            }
            if !metadata.is_empty() {
                a["metadata"] = pairs(metadata);
            }
            ("list_e2b_sandboxes", a)
        }
        SandboxVerb::Exec {
            sandbox_id,
            command,
            timeout,
            cwd,
            env,
            stdin,
        } => {
            let mut a =
                json!({"sandbox_id": sandbox_id, "command": command[0], "args": command[1..]});
            if let Some(t) = timeout {
                a["timeout"] = json!(t);
            }
            if let Some(d) = cwd {
                a["cwd"] = json!(d);
            }
            if !env.is_empty() {
                a["env"] = pairs(env);
            }
            if let Some(s) = stdin {
                a["stdin"] = json!(s);
            }
            ("execute_e2b_process", a)
        }
        SandboxVerb::Status {
            sandbox_id,
            log_lines,
        } => {
            let mut a = json!({"sandbox_id": sandbox_id});
            if let Some(n) = log_lines {
                a["log_lines"] = json!(n);
            }
            ("get_e2b_sandbox_status", a)
        }
        SandboxVerb::Terminate { sandbox_id, force } => (
            "terminate_e2b_sandbox",
            json!({"sandbox_id": sandbox_id, "force": force}),
        ),
    };
    let out = match client.tool(tool, args).await {
        Ok(v) => v,
        Err(CallError::Api { code, message }) => {
            eprintln!("error: {code}: {message}");
            return ExitCode::from(1);
        }
        Err(CallError::Transport(m)) => {
            eprintln!("error: {m}");
            return ExitCode::from(1);
        }
    };
    if c.json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return match verb {
            SandboxVerb::Exec { .. } => exec_exit(&out),
            _ => ExitCode::SUCCESS,
        };
    }
    match verb {
        SandboxVerb::Create { .. } => {
            println!(
                "created sandbox {} ({}, template {}, {} MB, {} CPU); it expires at {}",
                s(&out["sandbox_id"]),
                s(&out["name"]),
                s(&out["template"]),
                out["resources"]["memory_mb"],
                out["resources"]["cpu_count"],
                s(&out["expires_at"])
            );
        }
        SandboxVerb::List { .. } => print_list(&out),
        SandboxVerb::Exec { .. } => {
            use std::io::Write;
            let _ = std::io::stdout().write_all(s(&out["stdout"]).as_bytes());
            let _ = std::io::stderr().write_all(s(&out["stderr"]).as_bytes());
            if out["timed_out"] == json!(true) {
                eprintln!("quantbox: the process ran past its timeout and was killed");
            }
            if out["oom_killed"] == json!(true) {
                eprintln!("quantbox: the process was killed by the sandbox's memory limit");
            }
            for (field, what) in [
                ("stdout_truncated", "stdout"),
                ("stderr_truncated", "stderr"),
            ] {
                if out[field] == json!(true) {
                    eprintln!("quantbox: {what} was cut at 1 MiB");
                }
            }
            return exec_exit(&out);
        }
        SandboxVerb::Status { .. } => print_status(&out),
        SandboxVerb::Terminate { .. } => println!("{}", s(&out["message"])),
    }
    ExitCode::SUCCESS
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The process's exit status, or 128 + signal like a shell.
fn exec_exit(out: &Value) -> ExitCode {
    if let Some(code) = out["exit_code"].as_i64() {
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let sig = match out["signal"].as_str() {
        Some("SIGKILL") => 9,
        Some("SIGTERM") => 15,
        _ => 1,
    };
    ExitCode::from(128 + sig)
}

fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

fn print_list(out: &Value) {
    let rows: Vec<Vec<String>> = out["sandboxes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|sb| {
                    let status = match sb["stop_reason"].as_str() {
                        Some(r) => format!("{} ({r})", s(&sb["status"])),
                        None => s(&sb["status"]),
                    };
                    vec![
                        s(&sb["sandbox_id"]),
                        s(&sb["name"]),
                        status,
                        s(&sb["template"]),
                        format!(
                            "{} MB / {} CPU",
                            sb["resources"]["memory_mb"], sb["resources"]["cpu_count"]
                        ),
                        s(&sb["created_at"]),
                        s(&sb["expires_at"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    print_table(
        &[
            "ID", "NAME", "STATUS", "TEMPLATE", "LIMITS", "CREATED", "EXPIRES",
        ],
        &rows,
    );
    println!("{} sandbox(es)", out["total_count"]);
}

fn print_status(out: &Value) {
    let mut kv: BTreeMap<&str, String> = BTreeMap::new();
    kv.insert(
        "1 sandbox",
        format!("{} ({})", s(&out["sandbox_id"]), s(&out["name"])),
    );
    let status = match out["stop_reason"].as_str() {
        Some(r) => format!("{} ({r})", s(&out["status"])),
        None => s(&out["status"]),
    };
    kv.insert("2 status", status);
    kv.insert(
        "3 uptime",
        format!(
            "{} s, expires at {}",
            out["uptime_s"],
            s(&out["expires_at"])
        ),
    );
    let u = &out["resource_usage"];
    kv.insert(
        "4 usage",
        if u.is_null() {
            s(&out["resource_usage_reason"])
        } else {
            format!(
                "cpu {}%, memory {} of {} MB, disk {} MB, {} pids",
                u["cpu_percent"], u["memory_mb"], u["memory_limit_mb"], u["disk_mb"], u["pids"]
            )
        },
    );
    kv.insert(
        "5 processes",
        format!(
            "{} running, {} OOM kills",
            out["processes_running"], out["oom_kills"]
        ),
    );
    let reasons: Vec<String> = out["health"]["reasons"]
        .as_array()
        .map(|a| a.iter().map(s).collect())
        .unwrap_or_default();
    kv.insert(
        "6 health",
        if reasons.is_empty() {
            s(&out["health"]["status"])
        } else {
            format!("{}: {}", s(&out["health"]["status"]), reasons.join("; "))
        },
    );
    for (k, v) in kv {
        println!("{:<10} {v}", &k[2..]);
    }
    if let Some(logs) = out["recent_logs"].as_array().filter(|l| !l.is_empty()) {
        println!("recent logs:");
        for l in logs {
            println!(
                "  {} {:<6} {}",
                s(&l["timestamp"]),
                s(&l["stream"]),
                s(&l["line"])
            );
        }
    }
}
