//! Launching kernels: a [`Kernel`] names its source file, its function and the
//! kinds of its parameters (mirroring the C signature, which a test checks against
//! the sources); [`Device::launch`] refuses arguments of the wrong kinds before
//! anything reaches the GPU, picks the grid from a [`Grid`] shape and enqueues the
//! launch on the backend's stream. Every kernel uses blocks of [`BLOCK`] threads.

use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::device::Device;
use super::layout::MAX_RANK;

/// Threads per block of every launch (`GL_BLOCK` in `kernels/common.cu`).
pub(crate) const BLOCK: u32 = 256;

/// The C type of one kernel parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Any pointer (a device address).
    Ptr,
    /// `i64` (`long long`).
    I64,
    /// `int`.
    I32,
    F32,
    F64,
    /// `Dims`: MAX_RANK i64 values by value.
    Dims,
}

/// One kernel of a source file and its parameter list.
#[derive(Debug)]
pub(crate) struct Kernel {
    pub file: &'static str,
    pub name: &'static str,
    pub params: &'static [Kind],
}

/// One kernel argument.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Arg {
    Ptr(u64),
    I64(i64),
    I32(i32),
    F32(f32),
    F64(f64),
    Dims([i64; MAX_RANK]),
}

impl Arg {
    fn kind(&self) -> Kind {
        match self {
            Arg::Ptr(_) => Kind::Ptr,
            Arg::I64(_) => Kind::I64,
            Arg::I32(_) => Kind::I32,
            Arg::F32(_) => Kind::F32,
            Arg::F64(_) => Kind::F64,
            Arg::Dims(_) => Kind::Dims,
        }
    }
}

/// `usize` sizes as kernel arguments.
pub(crate) fn len(n: usize) -> Arg {
    Arg::I64(n as i64)
}

/// How the work of a launch is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Grid {
    /// A grid-stride loop over `n` elements.
    Elems(usize),
    /// One block per row (grid-stride over rows).
    Rows(usize),
    /// One warp per item (grid-stride over items).
    Warps(usize),
    /// One block.
    Single,
    /// x covers `cols` columns one thread each, y one block row per chunk.
    Cols { cols: usize, chunks: usize },
    /// y picks one of `slots` table entries, x strides over up to `len` elements.
    Slots { len: usize, slots: usize },
}

/// Largest grid.y a launch may use.
pub(crate) const MAX_GRID_Y: usize = 65_535;

/// The grid dimensions of `grid` on a device with `sm_count` multiprocessors, or
/// `None` when there is no work.
pub(crate) fn grid_dims(grid: Grid, sm_count: u32) -> Result<Option<(u32, u32, u32)>, String> {
    let block = BLOCK as usize;
    // Grid-stride loops need no more blocks than keep every multiprocessor busy.
    let cap = (sm_count.max(1) as usize) * 32;
    let blocks = |n: usize| n.div_ceil(block).clamp(1, cap) as u32;
    Ok(match grid {
        Grid::Elems(0) | Grid::Rows(0) | Grid::Warps(0) => None,
        Grid::Elems(n) => Some((blocks(n), 1, 1)),
        Grid::Rows(r) => Some((r.clamp(1, cap) as u32, 1, 1)),
        Grid::Warps(n) => Some((blocks(n.saturating_mul(32)), 1, 1)),
        Grid::Single => Some((1, 1, 1)),
        Grid::Cols { cols, chunks } => {
            if cols == 0 || chunks == 0 {
                return Ok(None);
            }
            if chunks > MAX_GRID_Y {
                return Err(format!("internal: {chunks} row chunks exceed the grid"));
            }
            let x = u32::try_from(cols.div_ceil(block))
                .map_err(|_| format!("internal: {cols} columns exceed the grid"))?;
            Some((x, chunks as u32, 1))
        }
        Grid::Slots { len, slots } => {
            if slots == 0 {
                return Ok(None);
            }
            if slots > MAX_GRID_Y {
                return Err(format!("internal: {slots} table entries exceed the grid"));
            }
            Some((blocks(len), slots as u32, 1))
        }
    })
}

/// Checks that `args` match the kernel's parameter kinds.
pub(crate) fn check_args(k: &Kernel, args: &[Arg]) -> Result<(), String> {
    let kinds: Vec<Kind> = args.iter().map(Arg::kind).collect();
    if kinds != k.params {
        return Err(format!(
            "internal: kernel {} takes {:?}, was given {:?}",
            k.name, k.params, kinds
        ));
    }
    Ok(())
}

impl Device {
    /// Enqueues kernel `k` over `grid` with `args`.
    pub(crate) fn launch(&self, k: &Kernel, grid: Grid, args: &[Arg]) -> Result<(), String> {
        check_args(k, args)?;
        let Some(grid_dim) = grid_dims(grid, self.sm_count)? else {
            return Ok(());
        };
        let f = self.kernels.function(k.file, k.name)?;
        let mut lb = self.stream.launch_builder(&f);
        for a in args {
            match a {
                Arg::Ptr(v) => lb.arg(v),
                Arg::I64(v) => lb.arg(v),
                Arg::I32(v) => lb.arg(v),
                Arg::F32(v) => lb.arg(v),
                Arg::F64(v) => lb.arg(v),
                Arg::Dims(v) => lb.arg(v),
            };
        }
        let cfg = LaunchConfig {
            grid_dim,
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the argument kinds match the kernel's C parameters (checked above
        // and by the signature test); every pointer is a live device buffer sized
        // for the index ranges the caller passes, as each op ensures.
        unsafe { lb.launch(cfg) }
            .map(|_| ())
            .map_err(|e| format!("launching {} failed: {e}", k.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_cover_the_work_and_stay_bounded() {
        assert_eq!(grid_dims(Grid::Elems(0), 132).unwrap(), None);
        assert_eq!(grid_dims(Grid::Elems(1), 132).unwrap(), Some((1, 1, 1)));
        assert_eq!(grid_dims(Grid::Elems(257), 132).unwrap(), Some((2, 1, 1)));
        assert_eq!(
            grid_dims(Grid::Elems(1 << 30), 132).unwrap(),
            Some((132 * 32, 1, 1))
        );
        assert_eq!(grid_dims(Grid::Rows(5), 132).unwrap(), Some((5, 1, 1)));
        assert_eq!(grid_dims(Grid::Warps(9), 132).unwrap(), Some((2, 1, 1)));
        assert_eq!(
            grid_dims(
                Grid::Cols {
                    cols: 300,
                    chunks: 7
                },
                132
            )
            .unwrap(),
            Some((2, 7, 1))
        );
        assert!(
            grid_dims(
                Grid::Cols {
                    cols: 3,
                    chunks: 70_000
                },
                132
            )
            .is_err()
        );
        assert_eq!(
            grid_dims(Grid::Slots { len: 10, slots: 3 }, 132).unwrap(),
            Some((1, 3, 1))
        );
        assert_eq!(
            grid_dims(Grid::Slots { len: 10, slots: 0 }, 132).unwrap(),
            None
        );
    }

    #[test]
    fn argument_kinds_must_match_the_signature() {
        let k = Kernel {
            file: "x.cu",
            name: "k",
            params: &[Kind::Ptr, Kind::I64],
        };
        assert!(check_args(&k, &[Arg::Ptr(1), len(3)]).is_ok());
        let err = check_args(&k, &[Arg::Ptr(1), Arg::I32(3)]).unwrap_err();
        assert!(err.contains("kernel k"), "{err}");
        assert!(check_args(&k, &[Arg::Ptr(1)]).is_err());
    }
}
