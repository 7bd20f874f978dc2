//! Host readings through `sysinfo`: CPU, memory and swap, real disks and network
//! interfaces, in base units (bytes, percent). Rates and CPU usage need two readings;
//! this module keeps the previous one and says `None` until it has it, so a first
//! refresh's 0 % is never reported.

use std::collections::BTreeMap;
use std::time::Instant;

use sysinfo::{DiskRefreshKind, Disks, Networks, System};

/// What does not change while the server runs (uptime excepted).
#[derive(Clone, Debug, PartialEq)]
pub struct HostInfo {
    pub hostname: String,
    pub os: String,
    pub kernel: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CpuReading {
    /// Busy share of all cores over the last interval, 0–100.
    pub usage_percent: f64,
    pub per_core: Vec<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MemoryReading {
    pub total_bytes: u64,
    pub available_bytes: u64,
    /// `total − available` (what `free` calls used, page cache that can be dropped
    /// excluded).
    pub used_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
}

impl MemoryReading {
    pub fn usage_percent(&self) -> f64 {
        percent(self.used_bytes, self.total_bytes)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DiskReading {
    pub mount_point: String,
    pub filesystem: String,
    pub device: String,
    pub total_bytes: u64,
    /// Space an unprivileged user can still write (`f_bavail`).
    pub available_bytes: u64,
    /// Space in use: `total − free` (`f_blocks − f_bfree`), as `df` says.
    pub used_bytes: u64,
}

impl DiskReading {
    /// `used / (used + available)`, as `df` computes it (space reserved for root, or
    /// held back by the filesystem, is neither).
    pub fn usage_percent(&self) -> f64 {
        percent(self.used_bytes, self.used_bytes + self.available_bytes)
    }

    /// Reads the space of `mount_point` with statvfs(2).
    // The statvfs field types differ between platforms (u32 on some 32-bit ones).
    #[allow(clippy::unnecessary_cast)]
    fn space(&mut self) -> bool {
        match nix::sys::statvfs::statvfs(self.mount_point.as_str()) {
            Ok(st) => {
                let frsize = st.fragment_size() as u64;
                self.total_bytes = st.blocks() as u64 * frsize;
                self.available_bytes = st.blocks_available() as u64 * frsize;
                self.used_bytes =
                    (st.blocks() as u64).saturating_sub(st.blocks_free() as u64) * frsize;
                true
            }
            Err(_) => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct NetReading {
    pub interface: String,
    /// `None` on the first reading of an interface, or when its counters went back
    /// (the interface was reset).
    pub rx_bytes_per_s: Option<f64>,
    pub tx_bytes_per_s: Option<f64>,
    pub rx_bytes_total: u64,
    pub tx_bytes_total: u64,
}

/// One reading of the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostReading {
    pub uptime_s: u64,
    /// `None` until a second reading exists.
    pub cpu: Option<CpuReading>,
    pub cores: usize,
    pub load_avg: [f64; 3],
    pub memory: MemoryReading,
    pub disks: Vec<DiskReading>,
    pub network: Vec<NetReading>,
}

pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64 * 100.0
    }
}

/// Filesystems that hold no user data of their own: not "real disks".
const VIRTUAL_FS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "securityfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

/// Keeps one entry per device (the shortest mount point: bind mounts repeat it), real
/// filesystems only, sorted by mount point.
pub fn real_disks(mut all: Vec<DiskReading>) -> Vec<DiskReading> {
    all.retain(|d| d.total_bytes > 0 && !VIRTUAL_FS.contains(&d.filesystem.as_str()));
    all.sort_by(|a, b| {
        (a.device.as_str(), a.mount_point.len()).cmp(&(b.device.as_str(), b.mount_point.len()))
    });
    all.dedup_by(|b, a| a.device == b.device);
    all.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
    all
}

/// Reads the host; keeps the previous reading for rates.
pub struct HostSampler {
    sys: System,
    disks: Disks,
    nets: Networks,
    /// Previous network totals per interface and when they were read.
    prev_net: BTreeMap<String, (u64, u64)>,
    prev_net_at: Instant,
    /// CPU counters were read once already (the next reading has a usage).
    cpu_primed: bool,
    ticks: u64,
}

/// Disks are listed again (mounts may come and go) every this many readings; their
/// space is read every time (statvfs).
const DISK_RELIST_EVERY: u64 = 30;

impl HostSampler {
    /// A sampler that has read nothing yet: its first reading has no CPU usage and no
    /// rates (it primes the counters), the second has them.
    pub fn new() -> Result<Self, String> {
        let sys = System::new().map_err(|e| format!("reading the host: {e}"))?;
        let disks = Disks::new_with_refreshed_list_specifics(DiskRefreshKind::nothing())
            .map_err(|e| format!("listing disks: {e}"))?;
        let nets =
            Networks::new_with_refreshed_list().map_err(|e| format!("listing networks: {e}"))?;
        Ok(Self {
            sys,
            disks,
            nets,
            prev_net: BTreeMap::new(),
            prev_net_at: Instant::now(),
            cpu_primed: false,
            ticks: 0,
        })
    }

    pub fn info() -> HostInfo {
        HostInfo {
            hostname: System::host_name().unwrap_or_else(|_| "unknown".into()),
            os: System::long_os_version()
                .or_else(|_| System::name())
                .unwrap_or_else(|_| "Linux".into()),
            kernel: System::kernel_version().unwrap_or_else(|_| "unknown".into()),
        }
    }

    /// Reads everything now.
    pub fn read(&mut self) -> HostReading {
        self.ticks += 1;
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        if self.ticks.is_multiple_of(DISK_RELIST_EVERY) {
            self.disks
                .refresh_specifics(true, DiskRefreshKind::nothing());
        }
        self.nets.refresh(true);
        let now = Instant::now();
        let cpu = self.cpu_primed.then(|| CpuReading {
            usage_percent: f64::from(self.sys.global_cpu_usage()),
            per_core: self
                .sys
                .cpus()
                .iter()
                .map(|c| f64::from(c.usage()))
                .collect(),
        });
        let load = System::load_average().map_or([0.0; 3], |l| [l.one, l.five, l.fifteen]);
        let total = self.sys.total_memory();
        let available = self.sys.available_memory();
        let memory = MemoryReading {
            total_bytes: total,
            available_bytes: available,
            used_bytes: total.saturating_sub(available),
            swap_total_bytes: self.sys.total_swap(),
            swap_used_bytes: self.sys.used_swap(),
        };
        let disks = real_disks(
            self.disks
                .iter()
                .filter_map(|d| {
                    let mut r = DiskReading {
                        mount_point: d.mount_point().to_string_lossy().into_owned(),
                        filesystem: d.file_system().to_string_lossy().into_owned(),
                        device: d.name().to_string_lossy().into_owned(),
                        total_bytes: 0,
                        available_bytes: 0,
                        used_bytes: 0,
                    };
                    // A mount that went away since the list was made is left out.
                    r.space().then_some(r)
                })
                .collect(),
        );
        let secs = now.duration_since(self.prev_net_at).as_secs_f64();
        let mut network: Vec<NetReading> = self
            .nets
            .iter()
            .map(|(name, d)| {
                let name = name.to_string_lossy().into_owned();
                let (rx, tx) = (d.total_received(), d.total_transmitted());
                let rate = |now: u64, before: Option<u64>| match before {
                    Some(b) if now >= b && secs > 0.0 => Some((now - b) as f64 / secs),
                    _ => None,
                };
                let prev = self.prev_net.get(&name).copied();
                NetReading {
                    rx_bytes_per_s: rate(rx, prev.map(|p| p.0)),
                    tx_bytes_per_s: rate(tx, prev.map(|p| p.1)),
                    rx_bytes_total: rx,
                    tx_bytes_total: tx,
                    interface: name,
                }
            })
            .collect();
        network.sort_by(|a, b| a.interface.cmp(&b.interface));
        self.prev_net = network
            .iter()
            .map(|n| (n.interface.clone(), (n.rx_bytes_total, n.tx_bytes_total)))
            .collect();
        self.prev_net_at = now;
        self.cpu_primed = true;
        HostReading {
            uptime_s: System::uptime().unwrap_or(0),
            cores: self.sys.cpus().len(),
            cpu,
            load_avg: load,
            memory,
            disks,
            network,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(mount: &str, fs: &str, dev: &str, total: u64) -> DiskReading {
        DiskReading {
            mount_point: mount.into(),
            filesystem: fs.into(),
            device: dev.into(),
            total_bytes: total,
            available_bytes: total / 2,
            used_bytes: total / 2,
        }
    }

    #[test]
    fn real_disks_drop_virtual_filesystems_and_bind_mounts() {
        let got = real_disks(vec![
            disk("/etc/hosts", "ext4", "/dev/vda", 100),
            disk("/", "ext4", "/dev/vda", 100),
            disk("/dev/shm", "tmpfs", "tmpfs", 100),
            disk("/data", "xfs", "/dev/vdb", 50),
            disk("/empty", "ext4", "/dev/vdc", 0),
            disk("/run/x", "overlay", "overlay", 10),
        ]);
        let mounts: Vec<&str> = got.iter().map(|d| d.mount_point.as_str()).collect();
        assert_eq!(mounts, ["/", "/data"]);
        assert_eq!(got[0].usage_percent(), 50.0);
        let reserved = DiskReading {
            used_bytes: 30,
            available_bytes: 10,
            ..disk("/", "ext4", "/dev/vda", 100)
        };
        assert_eq!(reserved.usage_percent(), 75.0);
    }

    #[test]
    fn the_first_reading_has_no_cpu_usage_and_no_rates() {
        let mut s = HostSampler::new().unwrap();
        let r = s.read();
        assert!(r.cpu.is_none());
        assert!(r.network.iter().all(|n| n.rx_bytes_per_s.is_none()));
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        let r = s.read();
        let cpu = r.cpu.expect("second reading has a CPU figure");
        assert_eq!(cpu.per_core.len(), r.cores);
        assert!(r.network.iter().all(|n| n.rx_bytes_per_s.is_some()));
        assert!(r.memory.total_bytes > 0 && r.memory.used_bytes <= r.memory.total_bytes);
    }
}
