//! NVIDIA GPUs through NVML. The library is loaded at run time (`libnvidia-ml.so.1`,
//! shipped with the driver), so one binary runs on machines with and without GPUs; where
//! it cannot be loaded or finds no device, the reading says why.

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;

#[derive(Clone, Debug, PartialEq)]
pub struct GpuDevice {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    /// Percent of the last sample period a kernel ran.
    pub utilization_percent: Option<f64>,
    pub memory_total_bytes: Option<u64>,
    pub memory_used_bytes: Option<u64>,
    pub temperature_c: Option<f64>,
    pub power_w: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum GpuReading {
    Devices(Vec<GpuDevice>),
    Unavailable { reason: String },
}

impl GpuReading {
    /// Mean utilization over devices that report it.
    pub fn mean_utilization(&self) -> Option<f64> {
        match self {
            Self::Devices(d) => {
                let u: Vec<f64> = d.iter().filter_map(|d| d.utilization_percent).collect();
                (!u.is_empty()).then(|| u.iter().sum::<f64>() / u.len() as f64)
            }
            Self::Unavailable { .. } => None,
        }
    }
}

pub struct GpuSampler {
    nvml: Result<Nvml, String>,
}

impl GpuSampler {
    pub fn new() -> Self {
        let nvml = Nvml::init().map_err(|e| {
            format!(
                "no NVIDIA GPU can be read on this host: NVML ({}) could not be loaded or initialised: {e}",
                "libnvidia-ml.so.1, installed with the NVIDIA driver"
            )
        });
        if let Err(e) = &nvml {
            tracing::info!("{e}");
        }
        Self { nvml }
    }

    pub fn read(&self) -> GpuReading {
        let nvml = match &self.nvml {
            Ok(n) => n,
            Err(reason) => {
                return GpuReading::Unavailable {
                    reason: reason.clone(),
                };
            }
        };
        let count = match nvml.device_count() {
            Ok(0) => {
                return GpuReading::Unavailable {
                    reason: "the NVIDIA driver is loaded but reports no GPU".into(),
                };
            }
            Ok(n) => n,
            Err(e) => {
                return GpuReading::Unavailable {
                    reason: format!("NVML could not count GPUs: {e}"),
                };
            }
        };
        let mut devices = Vec::new();
        for index in 0..count {
            let Ok(d) = nvml.device_by_index(index) else {
                continue;
            };
            let mem = d.memory_info().ok();
            devices.push(GpuDevice {
                index,
                name: d.name().unwrap_or_else(|_| "unknown".into()),
                uuid: d.uuid().unwrap_or_default(),
                utilization_percent: d.utilization_rates().ok().map(|u| f64::from(u.gpu)),
                memory_total_bytes: mem.as_ref().map(|m| m.total),
                memory_used_bytes: mem.as_ref().map(|m| m.used),
                temperature_c: d.temperature(TemperatureSensor::Gpu).ok().map(f64::from),
                power_w: d.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
            });
        }
        if devices.is_empty() {
            return GpuReading::Unavailable {
                reason: format!("NVML reports {count} GPU(s) but none could be opened"),
            };
        }
        GpuReading::Devices(devices)
    }
}

impl Default for GpuSampler {
    fn default() -> Self {
        Self::new()
    }
}
