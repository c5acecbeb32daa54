//! Tests of the backend that run without a GPU: the error a machine without a
//! driver gets, and the host-side parts of the dispatch.

use super::device::{Library, require};
use super::*;

#[test]
fn without_a_driver_the_backend_says_so_and_names_the_library() {
    if require(Library::Driver).is_ok() {
        eprintln!("a CUDA driver is present; the no-driver error cannot be checked here");
        return;
    }
    let err = match CudaBackend::new(0, CudaOptions::default()) {
        Ok(b) => panic!("a backend opened without a driver: {}", b.describe()),
        Err(e) => e.to_string(),
    };
    assert!(err.starts_with("no CUDA driver found"), "{err}");
    assert!(err.contains("libcuda.so.1"), "{err}");
    assert!(!err.contains('\n'), "{err}");
    let probed = probe().unwrap_err().to_string();
    assert!(probed.starts_with("no CUDA driver found"), "{probed}");
}

#[test]
fn missing_toolkit_libraries_point_at_the_library_path() {
    let e = CudaError::MissingLibrary {
        lib: "libnvrtc.so.13",
        tried: "libnvrtc.so.13, libnvrtc.so".into(),
    }
    .to_string();
    assert!(
        e.contains("libnvrtc.so.13") && e.contains("LD_LIBRARY_PATH=/usr/local/cuda/lib64"),
        "{e}"
    );
    let e = CudaError::NoDevice {
        ordinal: 3,
        count: 1,
    }
    .to_string();
    assert!(e.contains("device 3") && e.contains("1 CUDA device"), "{e}");
}

#[test]
fn shape_reads_only_the_dims() {
    assert_eq!(shape_of(&[2, 3, 4], 0, None).as_i64().unwrap(), [2, 3, 4]);
    assert_eq!(shape_of(&[2, 3, 4], -2, None).as_i64().unwrap(), [3, 4]);
    assert_eq!(shape_of(&[2, 3, 4], 1, Some(-1)).as_i64().unwrap(), [3]);
    assert!(
        shape_of(&[2, 3, 4], 2, Some(1))
            .as_i64()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        shape_of(&[2, 3, 4], -9, Some(9)).as_i64().unwrap(),
        [2, 3, 4]
    );
}

#[test]
fn backends_and_values_can_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<CudaBackend>();
    send_sync::<CudaValue>();
}
