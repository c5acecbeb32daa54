//! Wider vector instructions for the hot loops, chosen at run time. The crate is
//! compiled for baseline x86-64 (SSE2); the loops here are compiled a second and a
//! third time with AVX2+FMA and with AVX-512 enabled, and the widest version the CPU
//! supports runs. The loop bodies are ordinary Rust, so results are bit-identical
//! across versions (no fused multiply-add is formed without being written).

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU8, Ordering};

/// The instruction sets a loop may use, narrowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Base,
    Avx2,
    Avx512,
}

impl Level {
    /// Its name in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Level::Base => "SSE2",
            Level::Avx2 => "AVX2",
            Level::Avx512 => "AVX-512",
        }
    }

    /// Its vector width in bits.
    pub(crate) fn bits(self) -> usize {
        match self {
            Level::Base => 128,
            Level::Avx2 => 256,
            Level::Avx512 => 512,
        }
    }
}

/// The environment variable that caps the level: `avx2` runs on an AVX-512 CPU
/// what a CPU without AVX-512 runs, `base` what one without AVX2 runs.
pub const SIMD_ENV: &str = "GLORA_SIMD";

/// The cap `GLORA_SIMD` sets, if it names one; anything else is ignored (and said
/// once on stderr) rather than failing a run over a tuning knob.
fn cap_from_env() -> Option<Level> {
    let v = std::env::var(SIMD_ENV).ok()?;
    parse_cap(&v).unwrap_or_else(|other| {
        eprintln!("warning: {SIMD_ENV}={other} is not one of base, avx2, avx512; ignored");
        None
    })
}

/// A `GLORA_SIMD` value as a cap (`None` for empty), or the value back when it
/// names no level.
fn parse_cap(v: &str) -> Result<Option<Level>, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "" => Ok(None),
        "base" | "sse2" => Ok(Some(Level::Base)),
        "avx2" => Ok(Some(Level::Avx2)),
        "avx512" | "avx-512" => Ok(Some(Level::Avx512)),
        _ => Err(v.trim().to_string()),
    }
}

/// The widest level this CPU supports, capped by `GLORA_SIMD`, detected once.
pub(crate) fn level() -> Level {
    static LEVEL: AtomicU8 = AtomicU8::new(0);
    match LEVEL.load(Ordering::Relaxed) {
        1 => Level::Base,
        2 => Level::Avx2,
        3 => Level::Avx512,
        _ => {
            let detected = detect();
            let l = cap_from_env().map_or(detected, |cap| cap.min(detected));
            LEVEL.store(
                match l {
                    Level::Base => 1,
                    Level::Avx2 => 2,
                    Level::Avx512 => 3,
                },
                Ordering::Relaxed,
            );
            l
        }
    }
}

/// Whether `GLORA_SIMD` set the level below what the CPU has.
pub(crate) fn capped() -> bool {
    level() < detect()
}

/// The widest level the CPU has, whatever `GLORA_SIMD` says.
#[cfg(target_arch = "x86_64")]
pub(crate) fn detect() -> Level {
    use std::arch::is_x86_feature_detected as has;
    if has!("avx512f")
        && has!("avx512vl")
        && has!("avx512bw")
        && has!("avx512dq")
        && has!("avx2")
        && has!("fma")
    {
        Level::Avx512
    } else if has!("avx2") && has!("fma") {
        Level::Avx2
    } else {
        Level::Base
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn detect() -> Level {
    Level::Base
}

/// Defines `$name` that runs `$body` compiled for the widest available level.
/// The body sits in an `#[inline(always)]` function so that each wrapper gets its
/// own copy compiled with the wrapper's target features. Loops must be written in
/// the body itself: a loop inside a function the body calls is vectorised for the
/// baseline before it is inlined. Closures called per element are fine.
macro_rules! multiversion {
    (
        $(#[$doc:meta])*
        fn $name:ident<$($g:ident),*>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? where [$($w:tt)*] $body:block
    ) => {
        $(#[$doc])*
        #[inline]
        pub(crate) fn $name<$($g),*>($($arg: $ty),*) $(-> $ret)? where $($w)* {
            #[inline(always)]
            fn body<$($g),*>($($arg: $ty),*) $(-> $ret)? where $($w)* $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
            fn wide<$($g),*>($($arg: $ty),*) $(-> $ret)? where $($w)* {
                body($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn mid<$($g),*>($($arg: $ty),*) $(-> $ret)? where $($w)* {
                body($($arg),*)
            }

            match $crate::exec::cpu::simd::level() {
                // SAFETY: `level` reports AVX-512 (F, VL, BW, DQ), AVX2 and FMA only
                // when the CPU has them.
                #[cfg(target_arch = "x86_64")]
                $crate::exec::cpu::simd::Level::Avx512 => unsafe { wide($($arg),*) },
                // SAFETY: as above, for AVX2 and FMA.
                #[cfg(target_arch = "x86_64")]
                $crate::exec::cpu::simd::Level::Avx2 => unsafe { mid($($arg),*) },
                _ => body($($arg),*),
            }
        }
    };
}

pub(crate) use multiversion;

multiversion! {
    /// `out[i] = f(a[i])`.
    fn map_slice<A, R, F>(out: &mut [MaybeUninit<R>], a: &[A], f: &F)
    where [
        A: Copy,
        F: Fn(A) -> R,
    ] {
        for (o, &x) in out.iter_mut().zip(a) {
            o.write(f(x));
        }
    }
}

multiversion! {
    /// `out[i] = f(a[i], b[i])`.
    fn zip_slices<A, B, R, F>(out: &mut [MaybeUninit<R>], a: &[A], b: &[B], f: &F)
    where [
        A: Copy,
        B: Copy,
        F: Fn(A, B) -> R,
    ] {
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            o.write(f(x, y));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_env_values_name_a_cap_or_are_refused() {
        assert_eq!(parse_cap(""), Ok(None));
        assert_eq!(parse_cap(" AVX2 "), Ok(Some(Level::Avx2)));
        assert_eq!(parse_cap("sse2"), Ok(Some(Level::Base)));
        assert_eq!(parse_cap("avx-512"), Ok(Some(Level::Avx512)));
        assert_eq!(parse_cap("neon"), Err("neon".to_string()));
        assert!(Level::Base < Level::Avx2 && Level::Avx2 < Level::Avx512);
    }

    #[test]
    fn every_level_computes_the_same_bits() {
        let a: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin() * 10.0).collect();
        let f = |x: f32| super::super::math::gelu_erf(x) + x.sqrt();
        let mut out = vec![MaybeUninit::uninit(); a.len()];
        map_slice(&mut out, &a, &f);
        for (o, &x) in out.iter().zip(&a) {
            // SAFETY: map_slice wrote every element.
            let got = unsafe { o.assume_init() };
            let want = f(x);
            assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()));
        }
        assert!(matches!(level(), Level::Base | Level::Avx2 | Level::Avx512));
    }
}
