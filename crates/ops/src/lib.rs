//! The operations layer: every tool of the contract (`../shared/spec/tools.md`, copied
//! into docs/tools.md) is implemented here once — its parameters, defaults, validation,
//! errors and result shape. Front ends (REST, MCP, CLI) only convert transport to
//! [`Ops::call`] and back; they never reach the manager, the store or a provider.

pub mod agents;
pub mod args;
pub mod deployments;
pub mod error;
pub mod execution;
pub mod health;
pub mod imports;
pub mod metrics;
pub mod report;
pub mod sandboxes;
pub mod templates;

use quantbox_monitor::Monitor;
use quantbox_sandbox::{Deployments, Manager};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

pub use error::{ErrorCode, OpError};

/// Bounds of resource parameters on this host.
#[derive(Clone, Debug)]
pub struct HostLimits {
    pub host_memory_mb: u64,
    pub host_cpus: f64,
}

/// The operations, over one manager. Cheap to clone.
#[derive(Clone)]
pub struct Ops {
    manager: Manager,
    deployments: Deployments,
    limits: HostLimits,
    /// The collector `get_system_metrics` reads; `None` in a process that runs none.
    monitor: Option<Monitor>,
    /// Strategies, orders, fills, trades and prices.
    trading: Option<std::sync::Arc<dyn quantbox_trading::TradingStore>>,
    /// Agent runs started in the background.
    runs: agents::AgentRuns,
}

/// A tool as front ends advertise it.
#[derive(Clone, Debug, Serialize)]
pub struct ToolDef {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub input_schema: Value,
    pub output_schema: Value,
}

/// The fourteen tool names of the contract, in its order.
pub const CONTRACT_TOOLS: [&str; 14] = [
    "create_e2b_sandbox",
    "execute_e2b_process",
    "list_e2b_sandboxes",
    "terminate_e2b_sandbox",
    "get_e2b_sandbox_status",
    "deploy_e2b_template",
    "scale_e2b_deployment",
    "monitor_e2b_health",
    "export_e2b_template",
    "run_e2b_agent",
    "get_system_metrics",
    "monitor_strategy_health",
    "get_execution_analytics",
    "performance_report",
];

fn schema<T: JsonSchema>() -> Value {
    let mut v = serde_json::to_value(schemars::schema_for!(T)).expect("schemas serialise");
    if let Some(o) = v.as_object_mut() {
        // Clients validate against the schema itself; the meta-schema URI and the Rust
        // type name add nothing for them.
        o.remove("$schema");
        o.remove("title");
    }
    v
}

/// Every tool this build implements.
pub fn tools() -> Vec<ToolDef> {
    use sandboxes::*;
    vec![
        ToolDef {
            name: "create_e2b_sandbox",
            title: "Create a sandbox",
            description: "Creates and starts an isolated sandbox (Linux namespaces, cgroup limits, overlay root, seccomp) and returns its id. Memory and CPU are hard limits; the sandbox is terminated when its `timeout` (lifetime, seconds) runs out.",
            input_schema: schema::<CreateInput>(),
            output_schema: schema::<CreateOutput>(),
        },
        ToolDef {
            name: "execute_e2b_process",
            title: "Run a process in a sandbox",
            description: "Runs a process inside a running sandbox as the unprivileged sandbox user and waits for it. With `args` empty, `command` runs through `/bin/sh -c`; with `args`, it is executed directly. Returns exit code, signal, stdout and stderr (each capped at 1 MiB), and whether it timed out or was killed by the memory limit.",
            input_schema: schema::<ExecInput>(),
            output_schema: schema::<ExecOutput>(),
        },
        ToolDef {
            name: "list_e2b_sandboxes",
            title: "List sandboxes",
            description: "Lists sandboxes, newest first, optionally only running, paused or stopped ones, or those of a deployment or with given metadata.",
            input_schema: schema::<ListInput>(),
            output_schema: schema::<ListOutput>(),
        },
        ToolDef {
            name: "terminate_e2b_sandbox",
            title: "Terminate a sandbox",
            description: "Ends a sandbox: SIGTERM to every process, a grace period, then SIGKILL (`force: true` kills at once). Afterwards nothing of it is left on the host. Terminating a stopped sandbox succeeds and says so.",
            input_schema: schema::<TerminateInput>(),
            output_schema: schema::<TerminateOutput>(),
        },
        ToolDef {
            name: "get_e2b_sandbox_status",
            title: "Sandbox status",
            description: "Status of one sandbox: uptime, expiry, measured CPU, memory, disk and processes, OOM kills, health with reasons, and the last lines of its processes' output and lifecycle events.",
            input_schema: schema::<StatusInput>(),
            output_schema: schema::<StatusOutput>(),
        },
        ToolDef {
            name: "deploy_e2b_template",
            title: "Deploy a template",
            description: "Starts a deployment: a named group of sandboxes made from one template with one configuration (resources, environment, files, setup commands). Returns the deployment id and its first instance. A failing setup step fails the deployment and removes what was made; the error carries that step's output.",
            input_schema: schema::<deployments::DeployInput>(),
            output_schema: schema::<deployments::DeployOutput>(),
        },
        ToolDef {
            name: "scale_e2b_deployment",
            title: "Scale a deployment",
            description: "Sets a deployment's number of instances (creating them concurrently, or terminating the newest first); every instance's outcome is reported. With `auto_scale`, `instance_count` is the maximum and a controller keeps the deployment between `min_instances` and it by the instances' mean CPU, replacing instances that die.",
            input_schema: schema::<deployments::ScaleInput>(),
            output_schema: schema::<deployments::ScaleOutput>(),
        },
        ToolDef {
            name: "monitor_e2b_health",
            title: "Fleet health",
            description: "Health of all active sandboxes: an overall verdict and score (the share of active sandboxes that are healthy), counts, mean CPU and memory, the issues found, the providers' state and, when asked, every sandbox with its own health and reasons.",
            input_schema: schema::<health::HealthInput>(),
            output_schema: schema::<health::HealthOutput>(),
        },
        ToolDef {
            name: "export_e2b_template",
            title: "Export a sandbox as a template",
            description: "Turns a sandbox's current filesystem into a new template that later sandboxes can start from: its template's layers plus its changes (installed software, configuration; the user's home only with `include_data`; never /tmp). The sandbox is frozen while its files are copied and keeps running afterwards.",
            input_schema: schema::<templates::ExportInput>(),
            output_schema: schema::<templates::ExportOutput>(),
        },
        ToolDef {
            name: "get_system_metrics",
            title: "Host and sandbox metrics",
            description: "The host's CPU (total, per core, load average), memory and swap, disks, network interfaces (rates and totals), NVIDIA GPUs (or why there are none) and the sandboxes' usage, as the background collector last read them (every second by default). With `include_history`, each metric's history over `time_range_minutes` (up to 7 days; the last hour at full resolution, older data as one-minute aggregates) with min, avg, max and p95.",
            input_schema: schema::<metrics::MetricsInput>(),
            output_schema: schema::<metrics::MetricsOutput>(),
        },
        ToolDef {
            name: "run_e2b_agent",
            title: "Run a trading agent in a sandbox",
            description: "Runs a trading agent inside a running sandbox and waits for it: a built-in strategy (momentum, mean_reversion, pairs, trend, buy_and_hold) replaying bundled daily bars through a paper broker, or a custom program that prints the agent event protocol. Orders, fills, the equity curve and feed heartbeats are stored under `strategy_name`, so performance_report, get_execution_analytics and monitor_strategy_health report on the run. Records are simulated.",
            input_schema: schema::<agents::AgentInput>(),
            output_schema: schema::<agents::AgentOutput>(),
        },
        ToolDef {
            name: "monitor_strategy_health",
            title: "Strategy health",
            description: "A strategy's health score (0-100) and status (healthy >= 80, warning 60-80, critical < 60, no_data) from four checks: performance stability (Sharpe of the last 30 returns), drawdown (current), execution quality (fill rate by orders, mean slippage) and data feed (bars or heartbeats within 3 expected intervals), with an alert per failed check.",
            input_schema: schema::<execution::StrategyHealthInput>(),
            output_schema: schema::<execution::StrategyHealthOutput>(),
        },
        ToolDef {
            name: "get_execution_analytics",
            title: "Execution analytics",
            description: "Execution quality of the orders submitted in a window (1h, 24h, 7d, 30d ending now, or all), of one strategy or all: order counts by final state, fill rates by quantity and by orders, slippage in bps against the arrival price (positive = cost; mean, notional-weighted, max, adverse/improved/zero counts), submit-to-ack latency percentiles (nearest rank), and the same per symbol.",
            input_schema: schema::<execution::ExecutionInput>(),
            output_schema: schema::<execution::ExecutionOutput>(),
        },
        ToolDef {
            name: "performance_report",
            title: "Performance report",
            description: "A strategy's performance over the last `period_days` of its data (0 = all): total and annualized return, Sharpe, Sortino, Calmar, max drawdown and its duration, volatility, VaR/CVaR 95 %, skewness, kurtosis; win rate, profit factor and trade statistics from its closed trades; with `include_benchmark`, alpha, beta, correlation, tracking error and information ratio against a benchmark (default the S&P 500, `SPX`). Figures that cannot be computed are null with a reason.",
            input_schema: schema::<report::ReportInput>(),
            output_schema: schema::<report::ReportOutput>(),
        },
    ]
}

/// A result as JSON.
pub fn to_value<T: Serialize>(v: T) -> Result<Value, OpError> {
    serde_json::to_value(v).map_err(|e| OpError::internal(format!("encoding the result: {e}")))
}

/// How a tool's result leaves the operations layer.
pub trait Encoding: Send + 'static {
    type Out: Send + 'static;
    fn encode<T: Serialize>(v: T) -> Result<Self::Out, OpError>;
}

/// As a JSON value (MCP's structured content, the CLI's and tests' inspection).
pub struct AsValue;

/// As JSON text (REST bodies): no value tree is built on the way.
pub struct AsText;

impl Encoding for AsValue {
    type Out = Value;
    fn encode<T: Serialize>(v: T) -> Result<Value, OpError> {
        to_value(v)
    }
}

impl Encoding for AsText {
    type Out = String;
    fn encode<T: Serialize>(v: T) -> Result<String, OpError> {
        serde_json::to_string(&v)
            .map_err(|e| OpError::internal(format!("encoding the result: {e}")))
    }
}

impl Ops {
    pub fn new(
        manager: Manager,
        deployments: Deployments,
        limits: HostLimits,
        monitor: Option<Monitor>,
    ) -> Self {
        Self {
            manager,
            deployments,
            limits,
            monitor,
            trading: None,
            runs: agents::AgentRuns::default(),
        }
    }

    /// Adds the trading store the analytics tools read and imports write.
    pub fn with_trading(
        mut self,
        store: std::sync::Arc<dyn quantbox_trading::TradingStore>,
    ) -> Self {
        self.trading = Some(store);
        self
    }

    pub fn monitor_handle(&self) -> Option<&Monitor> {
        self.monitor.as_ref()
    }

    pub fn manager(&self) -> &Manager {
        &self.manager
    }

    /// Templates of the default provider.
    pub fn templates(&self) -> Vec<String> {
        self.manager
            .provider(&self.manager.config().default_provider)
            .map(|p| p.templates())
            .unwrap_or_default()
    }

    /// Runs tool `name` with JSON `args`; the result is the tool's JSON object.
    ///
    /// The tool runs in a task of its own: a caller that goes away (an HTTP client that
    /// disconnects, a cancelled MCP request) never cuts an operation off halfway, with a
    /// sandbox half made or a record half written.
    pub async fn call(&self, name: &str, args: Value) -> Result<Value, OpError> {
        self.call_as::<AsValue>(name, args).await
    }

    /// [`Ops::call`] with the result as JSON text (a REST body): the same operation,
    /// without building a JSON value tree first.
    pub async fn call_text(&self, name: &str, args: Value) -> Result<String, OpError> {
        self.call_as::<AsText>(name, args).await
    }

    async fn call_as<E: Encoding>(&self, name: &str, args: Value) -> Result<E::Out, OpError> {
        let this = self.clone();
        let name = name.to_owned();
        tokio::spawn(async move { this.run_tool::<E>(&name, args).await })
            .await
            .unwrap_or_else(|e| Err(OpError::internal(format!("the operation failed: {e}"))))
    }

    async fn run_tool<E: Encoding>(&self, name: &str, args: Value) -> Result<E::Out, OpError> {
        match name {
            "create_e2b_sandbox" => E::encode(self.create_e2b_sandbox(args::parse(args)?).await?),
            "execute_e2b_process" => E::encode(self.execute_e2b_process(args::parse(args)?).await?),
            "list_e2b_sandboxes" => E::encode(self.list_e2b_sandboxes(args::parse(args)?).await?),
            "terminate_e2b_sandbox" => {
                E::encode(self.terminate_e2b_sandbox(args::parse(args)?).await?)
            }
            "get_e2b_sandbox_status" => {
                E::encode(self.get_e2b_sandbox_status(args::parse(args)?).await?)
            }
            "deploy_e2b_template" => E::encode(self.deploy_e2b_template(args::parse(args)?).await?),
            "scale_e2b_deployment" => {
                E::encode(self.scale_e2b_deployment(args::parse(args)?).await?)
            }
            "monitor_e2b_health" => E::encode(self.monitor_e2b_health(args::parse(args)?).await?),
            "export_e2b_template" => E::encode(self.export_e2b_template(args::parse(args)?).await?),
            "get_system_metrics" => E::encode(self.get_system_metrics(args::parse(args)?).await?),
            "performance_report" => E::encode(self.performance_report(args::parse(args)?).await?),
            "run_e2b_agent" => E::encode(self.run_e2b_agent(args::parse(args)?).await?),
            "get_execution_analytics" => {
                E::encode(self.get_execution_analytics(args::parse(args)?).await?)
            }
            "monitor_strategy_health" => {
                E::encode(self.monitor_strategy_health(args::parse(args)?).await?)
            }
            other if CONTRACT_TOOLS.contains(&other) => Err(OpError::new(
                ErrorCode::Unavailable,
                format!(
                    "tool `{other}` is part of the contract but not available in this version of quantbox"
                ),
            )),
            other => Err(OpError::not_found(format!(
                "no tool named `{other}`; the tools are: {}",
                tools()
                    .iter()
                    .map(|t| t.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_names_are_the_contracts_and_schemas_are_objects() {
        for t in tools() {
            assert!(
                CONTRACT_TOOLS.contains(&t.name),
                "{} is not a contract name",
                t.name
            );
            assert_eq!(t.input_schema["type"], "object", "{}", t.name);
            assert_eq!(t.output_schema["type"], "object", "{}", t.name);
            assert!(t.input_schema.get("$schema").is_none());
        }
    }

    #[test]
    fn schemas_carry_defaults_and_descriptions() {
        let t = tools();
        let create = &t
            .iter()
            .find(|t| t.name == "create_e2b_sandbox")
            .unwrap()
            .input_schema;
        let p = &create["properties"];
        assert_eq!(p["template"]["default"], "base");
        assert_eq!(p["timeout"]["default"], 300);
        assert_eq!(p["memory_mb"]["default"], 512);
        assert_eq!(p["cpu_count"]["default"], 1.0);
        assert_eq!(create["required"], serde_json::json!(["name"]));
        assert!(
            p["name"]["description"]
                .as_str()
                .unwrap()
                .contains("[A-Za-z0-9._-]")
        );
        let exec = &t
            .iter()
            .find(|t| t.name == "execute_e2b_process")
            .unwrap()
            .input_schema;
        assert_eq!(exec["properties"]["timeout"]["default"], 60);
        assert_eq!(exec["properties"]["capture_output"]["default"], true);
        assert_eq!(exec["properties"]["args"]["default"], serde_json::json!([]));
        assert_eq!(exec["properties"]["args"]["type"], "array");
        let list = &t
            .iter()
            .find(|t| t.name == "list_e2b_sandboxes")
            .unwrap()
            .input_schema;
        assert_eq!(list["properties"]["status_filter"]["default"], "all");
        let term = &t
            .iter()
            .find(|t| t.name == "terminate_e2b_sandbox")
            .unwrap()
            .input_schema;
        assert_eq!(term["properties"]["force"]["default"], false);
        assert_eq!(term["properties"]["force"]["type"], "boolean");
        let st = &t
            .iter()
            .find(|t| t.name == "get_e2b_sandbox_status")
            .unwrap()
            .input_schema;
        assert_eq!(st["properties"]["log_lines"]["default"], 100);
    }
}
