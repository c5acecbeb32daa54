//! What the CPU can do at most: its model name and clock (read from `/proc/cpuinfo`
//! and sysfs), the vector width detected at run time, and the theoretical f32 peak
//! `cores × FMA units × lanes × 2 × clock` that `glora bench gemm` sets its
//! measured rates against. Each factor keeps a note of where it came from, because
//! a peak is only as good as its least certain factor (FMA units per core cannot be
//! detected at all). The parsers take text, so tests feed them samples.

use std::fmt;

/// What `/proc/cpuinfo` says about the machine.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CpuInfo {
    /// The first processor's `model name`.
    pub model: Option<String>,
    /// The highest `cpu MHz` over the processors (the current clock, as the kernel
    /// last read it).
    pub mhz: Option<f64>,
    /// Number of `processor` entries (logical CPUs).
    pub processors: usize,
}

/// Reads the fields glora uses from `/proc/cpuinfo` text.
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut info = CpuInfo::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => info.processors += 1,
            "model name" if info.model.is_none() && !value.is_empty() => {
                info.model = Some(value.to_string())
            }
            "cpu MHz" => {
                if let Ok(mhz) = value.parse::<f64>() {
                    info.mhz = Some(info.mhz.map_or(mhz, |m: f64| m.max(mhz)));
                }
            }
            _ => {}
        }
    }
    info
}

/// The SIMD width the matrix kernels can use on this CPU.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorWidth {
    pub bits: usize,
    /// How it was found: the detected feature, or why it is an assumption.
    pub source: String,
}

impl VectorWidth {
    /// f32 lanes per vector.
    pub fn lanes(&self) -> usize {
        self.bits / 32
    }
}

/// The vector width the executor's matrix products use, with the level of its other
/// loops (the widest the CPU has: AVX-512F, AVX2 with FMA, else SSE2; lowered by
/// `GLORA_SIMD` where that is set) and the product kernel that runs. Other
/// architectures are not detected; 128-bit (NEON's width) is assumed and said so.
pub fn detect_vector_width() -> VectorWidth {
    let k = crate::exec::cpu_kernels();
    if cfg!(not(target_arch = "x86_64")) {
        return VectorWidth {
            bits: 128,
            source: format!(
                "not detected on {}: 128-bit assumed; products by the {}",
                std::env::consts::ARCH,
                k.products
            ),
        };
    }
    let how = if k.capped {
        format!("capped by {} on a wider CPU", crate::exec::SIMD_ENV)
    } else {
        "detected at run time".into()
    };
    VectorWidth {
        bits: k.product_bits,
        source: format!("{} {how}; products by the {}", k.level, k.products),
    }
}

/// A clock frequency and where it was read.
#[derive(Clone, Debug, PartialEq)]
pub struct Clock {
    pub ghz: f64,
    pub source: String,
}

/// The clock for the peak: sysfs `cpuinfo_max_freq` (kHz, the highest the kernel
/// allows) when present, else the highest `cpu MHz` of `/proc/cpuinfo`.
pub fn pick_clock(sysfs_max_khz: Option<&str>, cpuinfo: &CpuInfo) -> Option<Clock> {
    if let Some(khz) = sysfs_max_khz.and_then(|s| s.trim().parse::<f64>().ok())
        && khz > 0.0
    {
        return Some(Clock {
            ghz: khz / 1e6,
            source: "sysfs cpu0/cpufreq/cpuinfo_max_freq".into(),
        });
    }
    cpuinfo.mhz.filter(|&m| m > 0.0).map(|mhz| Clock {
        ghz: mhz / 1e3,
        source: "/proc/cpuinfo cpu MHz, the clock when read; no sysfs cpuinfo_max_freq".into(),
    })
}

/// The theoretical f32 peak and its factors.
#[derive(Clone, Debug, PartialEq)]
pub struct Peak {
    pub cores: usize,
    pub fma_units: usize,
    pub lanes: usize,
    pub ghz: f64,
}

impl Peak {
    /// `cores × FMA units × lanes × 2 × GHz`: one FMA is two flops per lane.
    pub fn gflops(&self) -> f64 {
        self.cores as f64 * self.fma_units as f64 * self.lanes as f64 * 2.0 * self.ghz
    }
}

impl fmt::Display for Peak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} cores × {} FMA units × {} f32 lanes × 2 flops per FMA × {:.3} GHz = {:.1} GFLOP/s",
            self.cores,
            self.fma_units,
            self.lanes,
            self.ghz,
            self.gflops()
        )
    }
}

/// Everything `glora bench gemm` says about the machine.
#[derive(Clone, Debug)]
pub struct Machine {
    pub cpuinfo: CpuInfo,
    pub vector: VectorWidth,
    pub clock: Option<Clock>,
    /// Logical CPUs the process may use.
    pub available: usize,
}

impl Machine {
    /// Reads this machine: `/proc/cpuinfo`, sysfs and run-time feature detection.
    pub fn detect() -> Machine {
        let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpuinfo = parse_cpuinfo(&text);
        let sysfs =
            std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").ok();
        let clock = pick_clock(sysfs.as_deref(), &cpuinfo);
        Machine {
            cpuinfo,
            vector: detect_vector_width(),
            clock,
            available: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// The peak for `threads` threads: one core each, at most the CPUs available
    /// (a thread beyond them adds no FMA units). `None` without a clock.
    pub fn peak(&self, threads: usize, fma_units: usize) -> Option<Peak> {
        self.clock.as_ref().map(|c| Peak {
            cores: threads.clamp(1, self.available.max(1)),
            fma_units,
            lanes: self.vector.lanes(),
            ghz: c.ghz,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6448Y\ncpu MHz\t\t: 2100.000\nflags\t\t: fpu avx2 fma avx512f\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) Gold 6448Y\ncpu MHz\t\t: 3500.125\n\n";

    #[test]
    fn cpuinfo_sample_gives_model_highest_clock_and_processor_count() {
        let info = parse_cpuinfo(SAMPLE);
        assert_eq!(info.model.as_deref(), Some("Intel(R) Xeon(R) Gold 6448Y"));
        assert_eq!(info.mhz, Some(3500.125));
        assert_eq!(info.processors, 2);
        assert_eq!(parse_cpuinfo(""), CpuInfo::default());
    }

    #[test]
    fn sysfs_max_frequency_wins_over_cpuinfo_and_is_in_khz() {
        let info = parse_cpuinfo(SAMPLE);
        let c = pick_clock(Some("3900000\n"), &info).unwrap();
        assert!((c.ghz - 3.9).abs() < 1e-12);
        assert!(c.source.contains("cpuinfo_max_freq"));
        let c = pick_clock(Some("garbage"), &info).unwrap();
        assert!((c.ghz - 3.500125).abs() < 1e-12);
        assert!(c.source.contains("cpu MHz"));
        assert_eq!(pick_clock(None, &CpuInfo::default()), None);
    }

    /// Hand-worked: 2 cores × 2 FMA units × 16 lanes × 2 × 2.6 GHz = 332.8 GFLOP/s
    /// (AVX-512), and 8 × 2 × 8 × 2 × 3.0 = 768 (AVX2).
    #[test]
    fn peak_formula_matches_hand_worked_numbers() {
        let p = Peak {
            cores: 2,
            fma_units: 2,
            lanes: 16,
            ghz: 2.6,
        };
        assert!((p.gflops() - 332.8).abs() < 1e-9);
        assert!(p.to_string().ends_with("= 332.8 GFLOP/s"), "{p}");
        let p = Peak {
            cores: 8,
            fma_units: 2,
            lanes: 8,
            ghz: 3.0,
        };
        assert!((p.gflops() - 768.0).abs() < 1e-9);
        let m = Machine {
            cpuinfo: CpuInfo::default(),
            vector: VectorWidth {
                bits: 512,
                source: String::new(),
            },
            clock: Some(Clock {
                ghz: 2.0,
                source: String::new(),
            }),
            available: 4,
        };
        // Threads beyond the available CPUs add no cores.
        assert_eq!(m.peak(16, 1).unwrap().cores, 4);
        assert!((m.peak(3, 2).unwrap().gflops() - 3.0 * 2.0 * 16.0 * 2.0 * 2.0).abs() < 1e-9);
    }
}
