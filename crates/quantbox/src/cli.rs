//! Command-line parsing and dispatch. Server commands build the engine in-process;
//! `sandbox`, `template`, `deployment`, `health` and `metrics` (in [`crate::cli_metrics`])
//! verbs are a thin REST client of a running server, as are the trading verbs `import`,
//! `report`, `analytics`, `strategy` and `market` (in [`crate::cli_trading`]).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use reqwest::Method;
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
    /// Seconds between two readings of the host by the metrics collector (0.25 to 3600).
    #[arg(long, env = "QUANTBOX_METRICS_INTERVAL_S", default_value_t = 1.0, value_parser = parse_interval_s)]
    pub metrics_interval_s: f64,
    /// NVIDIA GPUs: `auto` binds the host's device nodes (/dev/nvidia*) into every
    /// sandbox when there are any; `off` passes none in.
    #[arg(long, env = "QUANTBOX_GPUS", default_value = "auto", value_parser = ["auto", "off"])]
    pub gpus: String,
}

/// Seconds between 0.25 and 3600 (collector and refresh intervals).
pub(crate) fn parse_interval_s(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("must be a number of seconds, got {s:?}"))?;
    if (0.25..=3600.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("must be between 0.25 and 3600 seconds, got {v}"))
    }
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
            metrics_interval: Duration::from_secs_f64(self.metrics_interval_s),
            gpu_device_dir: (self.gpus == "auto").then(|| PathBuf::from("/dev")),
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

/// `--e2b-listen`: an address, or `off`.
#[derive(Clone, Debug)]
pub struct E2bListen(pub Option<SocketAddr>);

fn parse_e2b_listen(s: &str) -> std::result::Result<E2bListen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(E2bListen(None));
    }
    s.parse::<SocketAddr>()
        .map(|a| E2bListen(Some(a)))
        .map_err(|e| {
            format!("--e2b-listen: {e}: expected HOST:PORT (e.g. 127.0.0.1:7401) or `off`")
        })
}

#[derive(Subcommand)]
enum Command {
    /// Start the server: REST under /api/v1 and MCP (streamable HTTP) at /mcp.
    Serve {
        /// Address to listen on. Beyond loopback, QUANTBOX_API_KEY is required.
        #[arg(long, env = "QUANTBOX_LISTEN", default_value = "127.0.0.1:7400")]
        listen: SocketAddr,
        /// Address of E2B's API (control plane and envd) for E2B's SDKs, or `off`.
        /// Beyond loopback, QUANTBOX_E2B_API_KEY or QUANTBOX_API_KEY is required.
        #[arg(long, env = "QUANTBOX_E2B_LISTEN", default_value = "127.0.0.1:7401", value_parser = parse_e2b_listen)]
        e2b_listen: E2bListen,
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
    /// Work with templates (the root filesystems sandboxes start from) on a running server.
    Template {
        #[command(subcommand)]
        verb: TemplateVerb,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Work with deployments (groups of sandboxes from one template) on a running server.
    Deployment {
        #[command(subcommand)]
        verb: DeploymentVerb,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Health of the fleet: overall verdict and score, counts, mean usage, issues and
    /// providers.
    Health {
        /// Also list every active sandbox with its own health.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The host's and the sandboxes' current figures; --watch refreshes them in place.
    ///
    /// CPU, memory, disks, network interfaces, GPUs and each sandbox's usage, as the
    /// server's collector last read them; --history adds min/avg/max/p95 over a range.
    Metrics(crate::cli_metrics::MetricsArgs),
    #[command(flatten)]
    Trading(crate::cli_trading::TradingCommand),
    /// Measure sandbox start-up, exec, terminate, pause/resume, export and scaling latency, and idle memory.
    Bench(crate::bench::BenchArgs),
    /// The agent runtime: runs a built-in strategy over bundled daily bars and prints
    /// the agent event protocol (what run_e2b_agent starts inside a sandbox).
    Agent {
        #[command(subcommand)]
        verb: crate::agent_cmd::AgentVerb,
    },
    /// envd's file operations, run by the server inside a sandbox (internal).
    #[command(name = "envd-fs", hide = true)]
    EnvdFs(crate::envd_fs::EnvdFsArgs),
}

#[derive(Subcommand)]
enum SandboxVerb {
    /// Create and start a sandbox.
    Create {
        /// 1 to 64 characters of [A-Za-z0-9._-].
        name: String,
        /// Template to start from [default: base].
        #[arg(long)]
        template: Option<String>,
        /// Lifetime in seconds.
        #[arg(long)]
        timeout: Option<i64>,
        /// Memory limit in MB, swap included.
        #[arg(long)]
        memory_mb: Option<i64>,
        /// CPU limit in cores (e.g. 0.5).
        #[arg(long)]
        cpu_count: Option<f64>,
        /// Environment variable KEY=VALUE, repeatable.
        #[arg(long = "env", value_parser = parse_pair)]
        env: Vec<(String, String)>,
        /// KEY=VALUE, repeatable.
        #[arg(long = "metadata", value_parser = parse_pair)]
        metadata: Vec<(String, String)>,
        /// Sandbox engine [default: the server's default, local].
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
        /// The sandbox to run it in.
        sandbox_id: String,
        /// The command line (one word or a quoted line: through /bin/sh -c).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
        /// Seconds before the process is killed.
        #[arg(long)]
        timeout: Option<i64>,
        /// Working directory inside the sandbox [default: /home/user].
        #[arg(long)]
        cwd: Option<String>,
        /// Environment variable KEY=VALUE, repeatable.
        #[arg(long = "env", value_parser = parse_pair)]
        env: Vec<(String, String)>,
        /// Text for the process's standard input.
        #[arg(long)]
        stdin: Option<String>,
    },
    /// Status, usage, health and recent logs of a sandbox.
    Status {
        /// The sandbox.
        sandbox_id: String,
        /// How many of the latest output lines and events to show [default: 100].
        #[arg(long)]
        log_lines: Option<i64>,
    },
    /// Terminate a sandbox.
    Terminate {
        /// The sandbox.
        sandbox_id: String,
        /// Kill at once instead of SIGTERM and a grace period.
        #[arg(long)]
        force: bool,
    },
    /// Freeze a running sandbox: it uses no CPU, keeps its memory and files, cannot run
    /// commands, and its lifetime clock stops.
    Pause {
        /// The sandbox.
        sandbox_id: String,
    },
    /// Thaw a paused sandbox; its lifetime clock runs again.
    Resume {
        /// The sandbox.
        sandbox_id: String,
    },
    /// Set the rest of a sandbox's lifetime (extend or shorten it).
    Timeout {
        /// The sandbox.
        sandbox_id: String,
        /// Seconds from now, 1 to 86400 (for a paused sandbox: from when it resumes).
        #[arg(allow_negative_numbers = true)]
        seconds: i64,
    },
    /// Turn a sandbox's current filesystem into a new template; the sandbox is frozen
    /// while its files are copied and keeps running afterwards. Shows progress on stderr.
    Export {
        /// The running or paused sandbox.
        sandbox_id: String,
        /// Name of the new template: 1 to 64 characters of [A-Za-z0-9._-].
        template_name: String,
        /// Also take the user's home directory (/home/user); /tmp is never taken.
        #[arg(long)]
        include_data: bool,
    },
}

#[derive(Subcommand)]
enum TemplateVerb {
    /// List templates with their layers, size, source and whether sandboxes or
    /// deployments use them.
    List,
    /// Make a template from a root filesystem (a directory, or a tar archive, plain or
    /// gzip) on this machine, which must be the server's. Shows progress on stderr.
    Import {
        /// Name of the new template: 1 to 64 characters of [A-Za-z0-9._-].
        name: String,
        /// The root filesystem: a directory or a .tar / .tar.gz file.
        rootfs: PathBuf,
        /// Default memory limit of its sandboxes, MB.
        #[arg(long)]
        memory_mb: Option<i64>,
        /// Default CPU limit of its sandboxes, cores.
        #[arg(long)]
        cpu_count: Option<f64>,
        /// Default lifetime of its sandboxes, seconds.
        #[arg(long)]
        timeout: Option<i64>,
        /// Environment variable KEY=VALUE of its sandboxes, repeatable.
        #[arg(long = "env", value_parser = parse_pair)]
        env: Vec<(String, String)>,
        /// Metadata KEY=VALUE of the template, repeatable.
        #[arg(long = "metadata", value_parser = parse_pair)]
        metadata: Vec<(String, String)>,
        /// Shell line run in the background as the sandbox user when a sandbox starts.
        #[arg(long)]
        start_command: Option<String>,
        /// What the template is for (e.g. trading, analytics, ml, custom).
        #[arg(long)]
        category: Option<String>,
    },
    /// Delete a template that no active sandbox or deployment uses.
    Delete {
        /// The template.
        name: String,
    },
}

#[derive(Subcommand)]
enum DeploymentVerb {
    /// List deployments, newest first.
    List {
        /// Deleted deployments too.
        #[arg(long)]
        all: bool,
    },
    /// A deployment: its configuration, its instances and its event log.
    Show {
        /// The deployment (dep_...).
        deployment_id: String,
        /// How many of the latest events to show, 0 to 1000 [default: 100].
        #[arg(long)]
        events: Option<i64>,
    },
    /// Deploy a template: start a deployment with its first instance. A failing setup
    /// step fails it and removes what was made.
    Create {
        /// Template every instance starts from.
        template: String,
        /// What it is for: trading, analytics, ml or custom.
        #[arg(long)]
        category: String,
        /// The configuration object, as JSON or @FILE holding JSON: env_vars, memory_mb,
        /// cpu_count, timeout, files (path → text), setup_commands, setup_user, metadata.
        #[arg(long)]
        config: Option<String>,
    },
    /// Set a deployment's number of instances; prints every instance's outcome.
    Scale {
        /// The deployment (dep_...).
        deployment_id: String,
        /// Instances wanted (0 stops them all); with --auto-scale, the most it may run.
        #[arg(allow_negative_numbers = true)]
        count: i64,
        /// Let a controller keep the deployment between --min and COUNT instances by
        /// their mean CPU, replacing instances that die.
        #[arg(long)]
        auto_scale: bool,
        /// With --auto-scale: the fewest instances [default: 1].
        #[arg(long)]
        min: Option<i64>,
        /// With --auto-scale: mean CPU percent above which an instance is added (below
        /// half of it one is removed) [default: 70].
        #[arg(long)]
        target_cpu: Option<f64>,
    },
    /// Terminate every instance of a deployment and delete it.
    Delete {
        /// The deployment (dep_...).
        deployment_id: String,
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
    // The agent runtime runs inside sandboxes: no async runtime, no threads.
    let command = match cli.command {
        Command::Agent { verb } => return crate::agent_cmd::main(verb),
        Command::EnvdFs(a) => return crate::envd_fs::main(a),
        other => other,
    };
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
        match command {
            Command::Serve {
                listen,
                e2b_listen,
                engine,
            } => {
                init_logging("info");
                crate::serve::serve(listen, e2b_listen.0, engine.config())
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
            Command::Agent { .. } | Command::EnvdFs(_) => {
                unreachable!("handled before the runtime starts")
            }
            Command::Sandbox { verb, client } => {
                init_logging("warn");
                Ok(sandbox(verb, &client).await)
            }
            Command::Template { verb, client } => {
                init_logging("warn");
                Ok(template(verb, &client).await)
            }
            Command::Deployment { verb, client } => {
                init_logging("warn");
                Ok(deployment(verb, &client).await)
            }
            Command::Health { all, client } => {
                init_logging("warn");
                Ok(health(all, &client).await)
            }
            Command::Metrics(args) => {
                init_logging("warn");
                Ok(crate::cli_metrics::run(args).await)
            }
            Command::Trading(cmd) => {
                init_logging("warn");
                Ok(crate::cli_trading::run(cmd).await)
            }
        }
    });
    // A blocking read of stdin (MCP over stdio ended by a signal) must not hold the
    // process: what is left of the runtime is abandoned after a short grace.
    rt.shutdown_timeout(Duration::from_millis(500));
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}

/// A REST client of the server.
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

/// A failed call: the server's error JSON, or why the server could not be reached.
pub(crate) enum CallError {
    Api { code: String, message: String },
    Transport(String),
}

impl Client {
    pub(crate) fn new(a: &ClientArgs) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: a.url.trim_end_matches('/').to_owned(),
            key: a.api_key.clone(),
        }
    }

    /// Sends a request to `path` (under the server's URL).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response, CallError> {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(b);
        }
        self.execute(req).await
    }

    /// A request to `path` (under the server's URL) with the API key, for a body or an
    /// answer other than JSON; send it with [`Client::execute`].
    pub(crate) fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
    }

    /// Sends a request made by [`Client::request`].
    pub(crate) async fn execute(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CallError> {
        req.send().await.map_err(|e| {
            CallError::Transport(format!(
                "cannot reach the quantbox server at {} ({e}); start it with `quantbox serve` or set --url / QUANTBOX_URL",
                self.base
            ))
        })
    }

    /// A JSON answer, or the server's error.
    pub(crate) async fn decode(&self, resp: reqwest::Response) -> Result<Value, CallError> {
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
        Err(api_error(&body["error"]))
    }

    /// A REST call with a JSON answer.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let resp = self.send(method, path, body).await?;
        self.decode(resp).await
    }

    async fn tool(&self, name: &str, args: Value) -> Result<Value, CallError> {
        self.call(Method::POST, &format!("/api/v1/tools/{name}"), Some(&args))
            .await
    }

    /// A POST answered with an NDJSON progress stream (`?progress=true`): shows the
    /// progress on stderr as `what` and returns the final result.
    async fn streamed(&self, path: &str, body: &Value, what: &str) -> Result<Value, CallError> {
        let mut resp = self
            .send(Method::POST, &format!("{path}?progress=true"), Some(body))
            .await?;
        if !resp.status().is_success() {
            return self.decode(resp).await;
        }
        let mut view = ProgressView::new(what);
        let mut buf: Vec<u8> = Vec::new();
        let outcome = loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => {
                    break Err(CallError::Transport(format!(
                        "the server at {} ended the progress stream without a result",
                        self.base
                    )));
                }
                Err(e) => {
                    break Err(CallError::Transport(format!(
                        "the progress stream from {} broke off: {e}",
                        self.base
                    )));
                }
            };
            buf.extend_from_slice(&chunk);
            let mut end = None;
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let v: Value = match serde_json::from_slice(&line) {
                    Ok(v) => v,
                    Err(e) => {
                        end = Some(Err(CallError::Transport(format!(
                            "unreadable line in the progress stream from {}: {e}",
                            self.base
                        ))));
                        break;
                    }
                };
                if let Some(p) = v.get("progress") {
                    view.report(
                        p["bytes"].as_u64().unwrap_or(0),
                        p["files"].as_u64().unwrap_or(0),
                    );
                } else if let Some(r) = v.get("result") {
                    end = Some(Ok(r.clone()));
                    break;
                } else {
                    end = Some(Err(api_error(&v["error"])));
                    break;
                }
            }
            if let Some(e) = end {
                break e;
            }
        };
        view.finish();
        outcome
    }
}

fn api_error(err: &Value) -> CallError {
    CallError::Api {
        code: err["code"].as_str().unwrap_or("internal").to_owned(),
        message: err["message"]
            .as_str()
            .unwrap_or("the server gave no message")
            .to_owned(),
    }
}

/// Progress of a copy on stderr: one line rewritten in place on a terminal, otherwise
/// at most a line a second (and the last numbers at the end).
struct ProgressView {
    what: String,
    tty: bool,
    last: Option<Instant>,
    pending: Option<(u64, u64)>,
    drawn: bool,
}

impl ProgressView {
    fn new(what: &str) -> Self {
        Self {
            what: what.to_owned(),
            tty: std::io::stderr().is_terminal(),
            last: None,
            pending: None,
            drawn: false,
        }
    }

    fn text(&self, bytes: u64, files: u64) -> String {
        format!("{}: {}, {files} files", self.what, human_mb(bytes))
    }

    fn report(&mut self, bytes: u64, files: u64) {
        if self.tty {
            eprint!("\r{}\x1b[K", self.text(bytes, files));
            self.drawn = true;
            return;
        }
        if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            eprintln!("{}", self.text(bytes, files));
            self.last = Some(Instant::now());
            self.pending = None;
        } else {
            self.pending = Some((bytes, files));
        }
    }

    fn finish(&mut self) {
        if self.drawn {
            eprintln!();
        }
        if let Some((b, f)) = self.pending.take() {
            eprintln!("{}", self.text(b, f));
        }
    }
}

fn human_mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / (1024.0 * 1024.0))
}

/// A path segment, percent-encoded.
pub(crate) fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Prints an error as `error: <code>: <message>` and returns exit status 1.
pub(crate) fn fail(e: CallError) -> ExitCode {
    match e {
        CallError::Api { code, message } => eprintln!("error: {code}: {message}"),
        CallError::Transport(m) => eprintln!("error: {m}"),
    }
    ExitCode::from(1)
}

/// Prints a result as JSON (`--json`) or with `human`; an error as [`fail`] does.
pub(crate) fn show(
    c: &ClientArgs,
    r: Result<Value, CallError>,
    human: impl FnOnce(&Value),
) -> ExitCode {
    match r {
        Ok(v) => {
            if c.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                human(&v);
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn print_message(v: &Value) {
    println!("{}", s(&v["message"]));
}

/// The sandbox verbs that have a resource route rather than a tool of their own.
async fn sandbox_route(verb: &SandboxVerb, client: &Client, c: &ClientArgs) -> Option<ExitCode> {
    let path = |id: &str, action: &str| format!("/api/v1/sandboxes/{}/{action}", seg(id));
    Some(match verb {
        SandboxVerb::Pause { sandbox_id } => show(
            c,
            client
                .call(Method::POST, &path(sandbox_id, "pause"), None)
                .await,
            print_message,
        ),
        SandboxVerb::Resume { sandbox_id } => show(
            c,
            client
                .call(Method::POST, &path(sandbox_id, "resume"), None)
                .await,
            print_message,
        ),
        SandboxVerb::Timeout {
            sandbox_id,
            seconds,
        } => show(
            c,
            client
                .call(
                    Method::POST,
                    &path(sandbox_id, "timeout"),
                    Some(&json!({ "timeout": seconds })),
                )
                .await,
            |v| {
                println!(
                    "{}; it expires at {}",
                    s(&v["message"]),
                    s(&v["expires_at"])
                )
            },
        ),
        SandboxVerb::Export {
            sandbox_id,
            template_name,
            include_data,
        } => show(
            c,
            client
                .streamed(
                    &path(sandbox_id, "export"),
                    &json!({"template_name": template_name, "include_data": include_data}),
                    "exporting",
                )
                .await,
            |v| {
                println!(
                    "exported sandbox {} as template {}: {:.1} MB, {} files (base template {})",
                    s(&v["sandbox_id"]),
                    s(&v["template_name"]),
                    v["size_mb"].as_f64().unwrap_or(0.0),
                    v["files_count"],
                    s(&v["base_template"])
                )
            },
        ),
        _ => return None,
    })
}

async fn sandbox(verb: SandboxVerb, c: &ClientArgs) -> ExitCode {
    let client = Client::new(c);
    if let Some(code) = sandbox_route(&verb, &client, c).await {
        return code;
    }
    let (tool, args) = match &verb {
        SandboxVerb::Pause { .. }
        | SandboxVerb::Resume { .. }
        | SandboxVerb::Timeout { .. }
        | SandboxVerb::Export { .. } => unreachable!("answered by sandbox_route"),
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
        Err(e) => return fail(e),
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
        SandboxVerb::Pause { .. }
        | SandboxVerb::Resume { .. }
        | SandboxVerb::Timeout { .. }
        | SandboxVerb::Export { .. } => unreachable!("answered by sandbox_route"),
    }
    ExitCode::SUCCESS
}

async fn template(verb: TemplateVerb, c: &ClientArgs) -> ExitCode {
    let client = Client::new(c);
    match verb {
        TemplateVerb::List => show(
            c,
            client.call(Method::GET, "/api/v1/templates", None).await,
            print_templates,
        ),
        TemplateVerb::Import {
            name,
            rootfs,
            memory_mb,
            cpu_count,
            timeout,
            env,
            metadata,
            start_command,
            category,
        } => {
            // The server reads the path itself: make it absolute here, where it was meant.
            let source = match std::fs::canonicalize(&rootfs) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: invalid_argument: ROOTFS {}: {e}", rootfs.display());
                    return ExitCode::from(1);
                }
            };
            let mut a = json!({"name": name, "source": source.to_string_lossy()});
            if let Some(m) = memory_mb {
                a["memory_mb"] = json!(m);
            }
            if let Some(cpu) = cpu_count {
                a["cpu_count"] = json!(cpu);
            }
            if let Some(t) = timeout {
                a["timeout"] = json!(t);
            }
            if !env.is_empty() {
                a["env_vars"] = pairs(&env);
            }
            if !metadata.is_empty() {
                a["metadata"] = pairs(&metadata);
            }
            if let Some(cmd) = start_command {
                a["start_command"] = json!(cmd);
            }
            if let Some(cat) = category {
                a["category"] = json!(cat);
            }
            show(
                c,
                client.streamed("/api/v1/templates", &a, "importing").await,
                |v| {
                    println!(
                        "imported template {} from {}: {:.1} MB, {} files",
                        s(&v["name"]),
                        source.display(),
                        v["size_mb"].as_f64().unwrap_or(0.0),
                        v["files_count"]
                    )
                },
            )
        }
        TemplateVerb::Delete { name } => show(
            c,
            client
                .call(
                    Method::DELETE,
                    &format!("/api/v1/templates/{}", seg(&name)),
                    None,
                )
                .await,
            print_message,
        ),
    }
}

fn print_templates(out: &Value) {
    let rows: Vec<Vec<String>> = out["templates"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| {
                    vec![
                        s(&t["name"]),
                        s(&t["layers"]),
                        format!("{:.1} MB", t["size_mb"].as_f64().unwrap_or(0.0)),
                        s(&t["files_count"]),
                        s(&t["source"]),
                        if t["in_use"] == json!(true) {
                            "yes"
                        } else {
                            "no"
                        }
                        .to_owned(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    print_table(
        &["NAME", "LAYERS", "SIZE", "FILES", "SOURCE", "IN USE"],
        &rows,
    );
    println!("{} template(s)", out["total_count"]);
}

async fn deployment(verb: DeploymentVerb, c: &ClientArgs) -> ExitCode {
    let client = Client::new(c);
    let path = |id: &str| format!("/api/v1/deployments/{}", seg(id));
    match verb {
        DeploymentVerb::List { all } => show(
            c,
            client
                .call(
                    Method::GET,
                    &format!("/api/v1/deployments?include_deleted={all}"),
                    None,
                )
                .await,
            print_deployments,
        ),
        DeploymentVerb::Show {
            deployment_id,
            events,
        } => {
            let mut p = path(&deployment_id);
            if let Some(n) = events {
                p.push_str(&format!("?events={n}"));
            }
            show(
                c,
                client.call(Method::GET, &p, None).await,
                print_deployment,
            )
        }
        DeploymentVerb::Create {
            template,
            category,
            config,
        } => {
            let mut a = json!({"template_name": template, "category": category});
            if let Some(cfg) = config {
                let text = match cfg.strip_prefix('@') {
                    Some(file) => match std::fs::read_to_string(file) {
                        Ok(t) => t,
                        Err(e) => {
                            eprintln!("error: invalid_argument: --config @{file}: {e}");
                            return ExitCode::from(1);
                        }
                    },
                    None => cfg,
                };
                // The server parses it (a string holding an object is accepted) and
                // names what is wrong.
                a["configuration"] = Value::String(text);
            }
            show(
                c,
                client
                    .call(Method::POST, "/api/v1/deployments", Some(&a))
                    .await,
                |v| {
                    println!(
                        "deployed template {} as deployment {} ({}); first instance {}",
                        s(&v["template"]),
                        s(&v["deployment_id"]),
                        s(&v["category"]),
                        s(&v["sandbox_id"])
                    )
                },
            )
        }
        DeploymentVerb::Scale {
            deployment_id,
            count,
            auto_scale,
            min,
            target_cpu,
        } => {
            let mut a = json!({"instance_count": count, "auto_scale": auto_scale});
            if let Some(m) = min {
                a["min_instances"] = json!(m);
            }
            if let Some(t) = target_cpu {
                a["target_cpu_percent"] = json!(t);
            }
            show(
                c,
                client
                    .call(
                        Method::POST,
                        &format!("{}/scale", path(&deployment_id)),
                        Some(&a),
                    )
                    .await,
                print_scale,
            )
        }
        DeploymentVerb::Delete { deployment_id } => show(
            c,
            client
                .call(Method::DELETE, &path(&deployment_id), None)
                .await,
            print_message,
        ),
    }
}

fn auto_scale_text(a: &Value) -> String {
    if a["enabled"] == json!(true) {
        format!(
            "{}-{} @ {}% CPU",
            a["min_instances"], a["max_instances"], a["target_cpu_percent"]
        )
    } else {
        "off".into()
    }
}

fn print_deployments(out: &Value) {
    let rows: Vec<Vec<String>> = out["deployments"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    vec![
                        s(&d["deployment_id"]),
                        s(&d["template"]),
                        s(&d["category"]),
                        s(&d["status"]),
                        format!("{}/{}", d["running_instances"], d["desired_instances"]),
                        auto_scale_text(&d["auto_scale"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    print_table(
        &[
            "ID",
            "TEMPLATE",
            "CATEGORY",
            "STATUS",
            "INSTANCES",
            "AUTO-SCALE",
        ],
        &rows,
    );
    println!("{} deployment(s)", out["total_count"]);
}

fn print_deployment(d: &Value) {
    let cfg = &d["configuration"];
    let rows = [
        ("deployment", s(&d["deployment_id"])),
        ("template", s(&d["template"])),
        ("category", s(&d["category"])),
        ("status", s(&d["status"])),
        (
            "instances",
            format!(
                "{} running of {} desired",
                d["running_instances"], d["desired_instances"]
            ),
        ),
        ("auto-scale", auto_scale_text(&d["auto_scale"])),
        (
            "resources",
            format!(
                "{} MB, {} CPU, lifetime {} s",
                cfg["memory_mb"], cfg["cpu_count"], cfg["timeout"]
            ),
        ),
        (
            "created",
            format!("{}, updated {}", s(&d["created_at"]), s(&d["updated_at"])),
        ),
    ];
    for (k, v) in rows {
        println!("{k:<11} {v}");
    }
    let instances: Vec<Vec<String>> = d["instances"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| vec![s(&i["sandbox_id"]), s(&i["status"]), s(&i["created_at"])])
                .collect()
        })
        .unwrap_or_default();
    println!();
    print_table(&["SANDBOX", "STATUS", "CREATED"], &instances);
    println!();
    println!("events:");
    for e in d["events"].as_array().into_iter().flatten() {
        println!(
            "  {}  {:<12} {}",
            s(&e["at"]),
            s(&e["kind"]),
            s(&e["message"])
        );
    }
}

fn print_scale(out: &Value) {
    for i in out["instances"].as_array().into_iter().flatten() {
        match i["error"].as_str() {
            Some(err) => println!("  {}  {}: {err}", s(&i["sandbox_id"]), s(&i["status"])),
            None => println!("  {}  {}", s(&i["sandbox_id"]), s(&i["status"])),
        }
    }
    println!(
        "deployment {}: {} instance(s), {} running, {} failed; auto-scale {}",
        s(&out["deployment_id"]),
        out["total_instances"],
        out["running_instances"],
        out["failed_count"],
        auto_scale_text(&out["auto_scale"])
    );
}

async fn health(all: bool, c: &ClientArgs) -> ExitCode {
    let client = Client::new(c);
    show(
        c,
        client
            .call(
                Method::GET,
                &format!("/api/v1/fleet/health?all={all}"),
                None,
            )
            .await,
        print_health,
    )
}

fn print_health(h: &Value) {
    let pct = |v: &Value| match v.as_f64() {
        Some(x) => format!("{x:.1}%"),
        None => "-".into(),
    };
    println!(
        "{:<10} {} (score {})",
        "overall",
        s(&h["overall_health"]),
        h["health_score"]
    );
    println!(
        "{:<10} {} active: {} running, {} paused; {} failed in the last hour",
        "sandboxes",
        h["total_sandboxes"],
        h["running_sandboxes"],
        h["paused_sandboxes"],
        h["failed_sandboxes"]
    );
    let averages = match h["averages_reason"].as_str() {
        Some(r) => r.to_owned(),
        None => format!(
            "CPU {} of a core, memory {} of limits",
            pct(&h["average_cpu"]),
            pct(&h["average_memory"])
        ),
    };
    println!("{:<10} {averages}", "averages");
    if let Some(p) = h["providers"].as_object() {
        for (name, v) in p {
            println!(
                "{:<10} {name}: {} ({})",
                "provider",
                s(&v["status"]),
                s(&v["detail"])
            );
        }
    }
    let issues = h["issues"].as_array().cloned().unwrap_or_default();
    if issues.is_empty() {
        println!("{:<10} none", "issues");
    } else {
        println!("issues:");
        for i in &issues {
            println!("  {}", s(i));
        }
    }
    if let Some(list) = h["sandboxes"].as_array() {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|sb| {
                let reasons: Vec<String> = sb["health"]["reasons"]
                    .as_array()
                    .map(|a| a.iter().map(s).collect())
                    .unwrap_or_default();
                let health = if reasons.is_empty() {
                    s(&sb["health"]["status"])
                } else {
                    format!("{}: {}", s(&sb["health"]["status"]), reasons.join("; "))
                };
                vec![
                    s(&sb["sandbox_id"]),
                    s(&sb["name"]),
                    s(&sb["status"]),
                    pct(&sb["cpu_percent"]),
                    match (sb["memory_mb"].as_f64(), sb["memory_limit_mb"].as_f64()) {
                        (Some(m), Some(l)) => format!("{m:.1} / {l:.0} MB"),
                        _ => "-".into(),
                    },
                    s(&sb["deployment_id"]),
                    health,
                ]
            })
            .collect();
        println!();
        print_table(
            &[
                "ID",
                "NAME",
                "STATUS",
                "CPU",
                "MEMORY",
                "DEPLOYMENT",
                "HEALTH",
            ],
            &rows,
        );
    }
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
