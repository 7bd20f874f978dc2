//! Wiring: opens the data directory (locked, so two servers never manage the same
//! sandboxes), the store, the providers, the manager and the operations.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use quantbox_monitor::{MetricStore, Monitor, MonitorConfig};
use quantbox_ops::{HostLimits, Ops};
use quantbox_sandbox::{
    DeploymentStore, Deployments, DeploymentsConfig, Manager, ManagerConfig, Provider, SandboxStore,
};
use quantbox_sandbox_local::{LocalConfig, LocalProvider};
use quantbox_store::SqliteStore;

/// Settings shared by `serve`, `mcp` and `bench`.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    pub max_sandboxes: usize,
    pub pids_max: u64,
    pub terminate_grace: Duration,
    /// Overrides the binary re-executed as a sandbox's init (tests).
    pub init_exe: Option<PathBuf>,
    pub cgroup_parent: String,
    /// Started sandboxes kept ready for `create` (0: none).
    pub warm_pool: usize,
    /// How often deployments' auto-scalers sample their instances.
    pub autoscale_interval: Duration,
    /// How often the metrics collector reads the host.
    pub metrics_interval: Duration,
    /// Where NVIDIA device nodes are looked for to pass into sandboxes (`None`: off).
    pub gpu_device_dir: Option<PathBuf>,
}

/// The default data directory: /var/lib/quantbox for root, else the XDG data home.
pub fn default_data_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/quantbox");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("quantbox");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/quantbox")
}

pub struct App {
    pub ops: Ops,
    pub local: Arc<LocalProvider>,
    pub data_dir: PathBuf,
    _lock: nix::fcntl::Flock<File>,
}

fn lock_data_dir(dir: &Path) -> Result<nix::fcntl::Flock<File>> {
    let path = dir.join("quantbox.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            use std::io::{Seek, Write};
            lock.set_len(0)?;
            lock.seek(std::io::SeekFrom::Start(0))?;
            writeln!(lock, "{}", std::process::id())?;
            Ok(lock)
        }
        Err((_, _)) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "the data directory {} is in use by another quantbox (pid {}); stop it or choose another --data-dir",
                dir.display(),
                pid.trim()
            )
        }
    }
}

impl App {
    /// Opens the engine with provider `e2b` configured from the environment
    /// (`E2B_API_KEY`, `E2B_DOMAIN`, `E2B_API_URL`, `E2B_SANDBOX_URL`).
    pub async fn open(cfg: &EngineConfig) -> Result<Self> {
        Self::open_with(cfg, quantbox_e2b::client::Config::from_env()).await
    }

    /// Opens the engine with provider `e2b` configured by `e2b` (tests: environment
    /// variables are process-global).
    pub async fn open_with(cfg: &EngineConfig, e2b: quantbox_e2b::client::Config) -> Result<Self> {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating the data directory {}", cfg.data_dir.display()))?;
        let lock = lock_data_dir(&cfg.data_dir)?;
        let store = Arc::new(
            SqliteStore::open(&cfg.data_dir.join("quantbox.db")).context("opening the database")?,
        );
        let mut local_cfg = LocalConfig::new(cfg.data_dir.join("local"));
        if let Some(exe) = &cfg.init_exe {
            local_cfg.init_exe = exe.clone();
        }
        local_cfg.cgroup_parent = cfg.cgroup_parent.clone();
        local_cfg.warm_pool = cfg.warm_pool;
        local_cfg.gpu_device_dir = cfg.gpu_device_dir.clone();
        let local =
            Arc::new(LocalProvider::new(local_cfg).context("starting the local sandbox provider")?);
        let info = local.info();
        tracing::info!(status = info.status, "local provider: {}", info.detail);
        let limits = HostLimits {
            host_memory_mb: local.host_memory_bytes() / (1024 * 1024),
            host_cpus: local.host_cpus(),
        };
        let manager = Manager::start(
            ManagerConfig {
                default_provider: "local".into(),
                max_sandboxes: cfg.max_sandboxes,
                default_pids_max: cfg.pids_max,
                terminate_grace: cfg.terminate_grace,
                ..ManagerConfig::default()
            },
            // `e2b` is always there: without E2B_API_KEY it says so on every call,
            // rather than being an unknown provider.
            vec![
                local.clone() as Arc<dyn Provider>,
                Arc::new(quantbox_e2b::provider::E2bProvider::new(e2b)) as Arc<dyn Provider>,
            ],
            store.clone() as Arc<dyn SandboxStore>,
        )
        .await
        .context("starting the sandbox manager")?;
        let monitor = Monitor::start(
            MonitorConfig {
                interval: cfg.metrics_interval,
                version: env!("CARGO_PKG_VERSION").into(),
                ..MonitorConfig::default()
            },
            Some(manager.clone()),
            Some(store.clone() as Arc<dyn MetricStore>),
        )
        .context("starting the metrics collector")?;
        let deployments = Deployments::start(
            manager.clone(),
            store.clone() as Arc<dyn DeploymentStore>,
            DeploymentsConfig {
                autoscale_interval: cfg.autoscale_interval,
                ..DeploymentsConfig::default()
            },
        )
        .context("starting deployments")?;
        let ops = Ops::new(manager, deployments, limits, Some(monitor))
            .with_trading(store as Arc<dyn quantbox_trading::TradingStore>);
        // The price history compiled into the binary (the default benchmark among it),
        // written once per data directory.
        let loaded = ops
            .load_bundled_market_data()
            .await
            .map_err(|e| anyhow::anyhow!("loading the bundled market data: {}", e.message))?;
        if loaded > 0 {
            tracing::info!(symbols = loaded, "loaded the bundled market data");
        }
        Ok(Self {
            ops: ops.clone(),
            local,
            data_dir: cfg.data_dir.clone(),
            _lock: lock,
        })
    }
}

impl App {
    /// Ends background work: drains the warm pool and stops the metrics collector,
    /// which writes the minutes in progress to the store. Running sandboxes keep running.
    pub async fn stop(&self) {
        self.ops.manager().shutdown().await;
        if let Some(m) = self.ops.monitor_handle().cloned() {
            let _ = tokio::task::spawn_blocking(move || m.shutdown()).await;
        }
    }
}
