//! Kernel sources and their compilation. Each file of `kernels/` is embedded with
//! `include_str!` behind the shared prelude `kernels/common.cu`; NVRTC compiles a
//! file to PTX for the device's compute capability the first time one of its
//! kernels is launched. PTX is cached on disk under a name derived from
//! sha256(source, arch, NVRTC version) and written atomically (temporary file, then
//! rename); a cache that cannot be read or written costs a warning and a compile,
//! never a failure. Each backend loads a module once and looks each function up
//! once. A driver older than NVRTC rejects its PTX; the module is then compiled
//! to a binary for the device's own architecture instead.

use std::collections::HashMap;
use std::ffi::{CString, c_char};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;
use sha2::{Digest, Sha256};

use super::device::{CudaError, Library, require};

macro_rules! kernel_file {
    ($file:literal) => {
        (
            $file,
            concat!(
                include_str!("../../../kernels/common.cu"),
                include_str!(concat!("../../../kernels/", $file))
            ),
        )
    };
}

pub(crate) const ELEMENTWISE: &str = "elementwise.cu";
pub(crate) const REDUCE: &str = "reduce.cu";
pub(crate) const NORM: &str = "norm.cu";
pub(crate) const COPY: &str = "copy.cu";
pub(crate) const GLORA: &str = "glora.cu";
pub(crate) const LOSS: &str = "loss.cu";
pub(crate) const ADAMW: &str = "adamw.cu";

static SOURCES: [(&str, &str); 7] = [
    kernel_file!("elementwise.cu"),
    kernel_file!("reduce.cu"),
    kernel_file!("norm.cu"),
    kernel_file!("copy.cu"),
    kernel_file!("glora.cu"),
    kernel_file!("loss.cu"),
    kernel_file!("adamw.cu"),
];

/// Every kernel source, by file name, as NVRTC compiles it (prelude included).
pub fn kernel_sources() -> &'static [(&'static str, &'static str)] {
    &SOURCES
}

fn source_of(file: &str) -> Option<&'static str> {
    SOURCES.iter().find(|(n, _)| *n == file).map(|(_, s)| *s)
}

/// Compiles one source with NVRTC to PTX for `arch` ("sm_90"); needs only libnvrtc.
pub fn compile_kernel(name: &str, src: &str, arch: &str) -> Result<String, CudaError> {
    compile_kernel_with_log(name, src, arch).map(|(ptx, _)| ptx)
}

/// [`compile_kernel`], also returning NVRTC's log (warnings; empty when clean).
pub fn compile_kernel_with_log(
    name: &str,
    src: &str,
    arch: &str,
) -> Result<(String, String), CudaError> {
    let (ptx, log) = compile(name, src, arch, Output::Ptx)?;
    Ok((c_text(&ptx), log))
}

/// A binary (cubin) for exactly `arch`, which the driver loads without compiling
/// PTX: the way out when the driver is older than NVRTC and rejects its PTX.
pub(crate) fn compile_cubin(name: &str, src: &str, arch: &str) -> Result<Vec<u8>, CudaError> {
    compile(name, src, arch, Output::Cubin).map(|(bin, _)| bin.iter().map(|&c| c as u8).collect())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    Ptx,
    Cubin,
}

/// Compiles `src` and returns the requested output and the log.
fn compile(
    name: &str,
    src: &str,
    arch: &str,
    output: Output,
) -> Result<(Vec<c_char>, String), CudaError> {
    let valid_arch = (arch.starts_with("sm_") || arch.starts_with("compute_"))
        && arch.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid_arch {
        return Err(CudaError::Nvrtc(format!(
            "'{arch}' is not a GPU architecture (expected e.g. sm_90)"
        )));
    }
    require(Library::Nvrtc)?;
    let src_c = CString::new(src)
        .map_err(|_| CudaError::Nvrtc(format!("{name}: the source holds a NUL byte")))?;
    let name_c = CString::new(name)
        .map_err(|_| CudaError::Nvrtc(format!("{name:?}: the name holds a NUL byte")))?;
    let prog = cudarc::nvrtc::result::create_program(&src_c, Some(&name_c))
        .map_err(|e| CudaError::Nvrtc(format!("creating the program {name} failed: {e:?}")))?;
    let options = [
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
    ];
    // SAFETY: `prog` is a live program created above; `src_c` and `name_c` outlive
    // it; it is destroyed once below.
    let compiled = unsafe { cudarc::nvrtc::result::compile_program(prog, &options) };
    // SAFETY: as above.
    let log = unsafe { cudarc::nvrtc::result::get_program_log(prog) }
        .map(|l| c_text(&l))
        .unwrap_or_default();
    let result = match (compiled, output) {
        // SAFETY: as above; the program compiled.
        (Ok(()), Output::Ptx) => unsafe { cudarc::nvrtc::result::get_ptx(prog) }
            .map_err(|e| CudaError::Nvrtc(format!("reading the PTX of {name} failed: {e:?}"))),
        // SAFETY: as above.
        (Ok(()), Output::Cubin) => unsafe { read_cubin(prog) }
            .map_err(|e| CudaError::Nvrtc(format!("reading the binary of {name} failed: {e:?}"))),
        (Err(e), _) => Err(CudaError::Nvrtc(format!(
            "compiling {name} for {arch} failed ({e:?}): {}",
            one_line(&log)
        ))),
    };
    // SAFETY: destroyed exactly once; a failure to free cannot be acted on.
    let _ = unsafe { cudarc::nvrtc::result::destroy_program(prog) };
    result.map(|out| (out, log.trim().to_string()))
}

/// The cubin of a compiled program.
///
/// # Safety
/// `prog` must be a live, successfully compiled program.
unsafe fn read_cubin(
    prog: cudarc::nvrtc::sys::nvrtcProgram,
) -> Result<Vec<c_char>, cudarc::nvrtc::result::NvrtcError> {
    let mut size = 0usize;
    // SAFETY: a live program and a valid out-pointer.
    unsafe { cudarc::nvrtc::sys::nvrtcGetCUBINSize(prog, &mut size) }.result()?;
    let mut bin: Vec<c_char> = vec![0; size];
    // SAFETY: `bin` holds the `size` bytes NVRTC writes.
    unsafe { cudarc::nvrtc::sys::nvrtcGetCUBIN(prog, bin.as_mut_ptr()) }.result()?;
    Ok(bin)
}

/// The text of a NUL-terminated C buffer.
fn c_text(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A multi-line compiler log as one line.
fn one_line(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let text = lines.join(" | ");
    if text.len() > 2000 {
        let cut = (0..=2000)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}…", &text[..cut])
    } else {
        text
    }
}

/// NVRTC's (major, minor) version.
fn nvrtc_version() -> Result<(i32, i32), CudaError> {
    require(Library::Nvrtc)?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two valid out-pointers.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| CudaError::Nvrtc(format!("querying the version failed: {e:?}")))?;
    Ok((major, minor))
}

/// The folder of the PTX cache: the option, `$GLORA_KERNEL_CACHE`,
/// `$XDG_CACHE_HOME/glora/kernels` or `$HOME/.cache/glora/kernels`, in that order
/// (empty variables are ignored); `None` when none applies.
pub(crate) fn resolve_cache_dir(
    explicit: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Option<PathBuf> {
    let var = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = var("GLORA_KERNEL_CACHE") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = var("XDG_CACHE_HOME") {
        return Some(Path::new(&p).join("glora").join("kernels"));
    }
    var("HOME").map(|h| Path::new(&h).join(".cache").join("glora").join("kernels"))
}

/// Hex sha256 of the source, the architecture and the NVRTC version.
pub(crate) fn cache_key(src: &str, arch: &str, version: (i32, i32)) -> String {
    let mut h = Sha256::new();
    h.update(src.as_bytes());
    h.update([0u8]);
    h.update(arch.as_bytes());
    h.update([0u8]);
    h.update(format!("nvrtc {}.{}", version.0, version.1).as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `elementwise.cu` with key `k…` → `elementwise-k….ptx`.
pub(crate) fn cache_file_name(file: &str, key: &str) -> String {
    let stem = file.strip_suffix(".cu").unwrap_or(file);
    format!("{stem}-{key}.ptx")
}

/// Writes `text` to `path` through a temporary file in the same folder.
fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(
        ".{}.{}.{nanos}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("kernel"),
        std::process::id()
    ));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The loaded modules and functions of one backend.
pub(crate) struct Kernels {
    ctx: Arc<CudaContext>,
    arch: String,
    cache: Option<PathBuf>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<(&'static str, &'static str), CudaFunction>>,
    warned: AtomicBool,
}

impl Kernels {
    pub fn new(ctx: Arc<CudaContext>, arch: String, explicit_cache: Option<PathBuf>) -> Kernels {
        let cache = resolve_cache_dir(explicit_cache.as_deref(), |k| std::env::var(k).ok());
        Kernels {
            ctx,
            arch,
            cache,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            warned: AtomicBool::new(false),
        }
    }

    /// The kernel `name` of source file `file`, compiling and loading the file on
    /// first use.
    pub fn function(&self, file: &'static str, name: &'static str) -> Result<CudaFunction, String> {
        let mut functions = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = functions.get(&(file, name)) {
            return Ok(f.clone());
        }
        let module = self.module(file)?;
        let f = module
            .load_function(name)
            .map_err(|e| format!("kernel {name} is not in {file}: {e}"))?;
        functions.insert((file, name), f.clone());
        Ok(f)
    }

    fn module(&self, file: &'static str) -> Result<Arc<CudaModule>, String> {
        let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = modules.get(file) {
            return Ok(m.clone());
        }
        let src = source_of(file).ok_or_else(|| format!("internal: no kernel file {file}"))?;
        let version = nvrtc_version().map_err(|e| e.to_string())?;
        let path = self
            .cache
            .as_ref()
            .map(|d| d.join(cache_file_name(file, &cache_key(src, &self.arch, version))));
        let cached = path.as_deref().and_then(|p| self.read_cached(p));
        let module = match cached.map(|ptx| self.load(Ptx::from_src(ptx))) {
            Some(Ok(m)) => m,
            // A stale or damaged cache entry is replaced by a fresh compile.
            _ => {
                let ptx = compile_kernel(file, src, &self.arch).map_err(|e| e.to_string())?;
                if let Some(p) = &path
                    && let Err(e) = write_atomic(p, &ptx)
                {
                    self.warn(&format!("cannot write {}: {e}", p.display()));
                }
                match self.load(Ptx::from_src(ptx)) {
                    Ok(m) => m,
                    Err(ptx_err) => {
                        let bin =
                            compile_cubin(file, src, &self.arch).map_err(|e| e.to_string())?;
                        self.load(Ptx::from_binary(bin)).map_err(|e| {
                            format!("loading {file} failed: as PTX: {ptx_err}; as a binary: {e}")
                        })?
                    }
                }
            }
        };
        modules.insert(file, module.clone());
        Ok(module)
    }

    fn read_cached(&self, path: &Path) -> Option<String> {
        match std::fs::read_to_string(path) {
            Ok(text) if text.contains(".version") && !text.contains('\0') => Some(text),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                self.warn(&format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }

    fn load(&self, image: Ptx) -> Result<Arc<CudaModule>, String> {
        self.ctx.load_module(image).map_err(|e| e.to_string())
    }

    /// One warning per backend about the kernel cache.
    fn warn(&self, msg: &str) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            eprintln!("warning: kernel cache: {msg}; compiling kernels without it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_cache_folder_follows_the_documented_order() {
        let all = [
            ("GLORA_KERNEL_CACHE", "/k"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(
            resolve_cache_dir(Some(Path::new("/o")), env(&all)),
            Some(PathBuf::from("/o"))
        );
        assert_eq!(
            resolve_cache_dir(None, env(&all)),
            Some(PathBuf::from("/k"))
        );
        assert_eq!(
            resolve_cache_dir(None, env(&all[1..])),
            Some(PathBuf::from("/x/glora/kernels"))
        );
        assert_eq!(
            resolve_cache_dir(None, env(&[("XDG_CACHE_HOME", ""), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.cache/glora/kernels"))
        );
        assert_eq!(resolve_cache_dir(None, env(&[])), None);
    }

    #[test]
    fn cache_keys_change_with_source_arch_and_compiler() {
        let k = cache_key("src", "sm_90", (13, 0));
        assert_eq!(k.len(), 64);
        assert!(k.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(k, cache_key("src", "sm_90", (13, 0)));
        assert_ne!(k, cache_key("src2", "sm_90", (13, 0)));
        assert_ne!(k, cache_key("src", "sm_80", (13, 0)));
        assert_ne!(k, cache_key("src", "sm_90", (13, 1)));
        // The separators keep (source, arch) pairs apart.
        assert_ne!(cache_key("ab", "c", (1, 0)), cache_key("a", "bc", (1, 0)));
        assert_eq!(
            cache_file_name("norm.cu", "abc"),
            "norm-abc.ptx".to_string()
        );
    }

    #[test]
    fn atomic_writes_replace_the_file_and_leave_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("a.ptx");
        write_atomic(&path, "one").unwrap();
        write_atomic(&path, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn every_kernel_file_carries_the_prelude() {
        assert_eq!(kernel_sources().len(), 7);
        for (name, src) in kernel_sources() {
            assert!(src.contains("struct Dims"), "{name}");
            assert!(src.contains("extern \"C\" __global__"), "{name}");
        }
    }

    #[test]
    fn binaries_for_the_device_architecture_are_elf_images() {
        let (name, src) = kernel_sources()[0];
        match compile_cubin(name, src, "sm_90") {
            Ok(bin) => assert_eq!(&bin[..4], b"\x7fELF"),
            Err(CudaError::MissingLibrary { .. }) => eprintln!("skipping: libnvrtc not found"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn compiler_logs_become_one_line() {
        assert_eq!(one_line("a\n\n  b  \nc"), "a | b | c");
        let c: Vec<c_char> = b"ptx\0junk".iter().map(|&b| b as c_char).collect();
        assert_eq!(c_text(&c), "ptx");
    }
}
