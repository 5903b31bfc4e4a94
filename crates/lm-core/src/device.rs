//! The one place that turns a device name into a burn [`Device`].
//!
//! Names: `cpu` (the default CPU backend: `flex` when compiled in, else `ndarray`), `flex`,
//! `ndarray` (explicit CPU backends, for benchmarks), `wgpu` and `cuda` (behind the cargo
//! features of the same name). The CLI's `--device` flag and the `OPENEXPERT_DEVICE`
//! environment variable both go through [`device_from_name`]; no other file names a backend.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use burn::tensor::Device;

use crate::error::{LmError, Result};

/// Environment variable consulted by [`device_from_env`].
pub const DEVICE_ENV: &str = "OPENEXPERT_DEVICE";

/// The device names this build understands, for help texts and error messages.
pub fn available_devices() -> Vec<&'static str> {
    let mut names = Vec::new();
    if cfg!(any(feature = "flex", feature = "ndarray")) {
        names.push("cpu");
    }
    if cfg!(feature = "flex") {
        names.push("flex");
    }
    if cfg!(feature = "ndarray") {
        names.push("ndarray");
    }
    if cfg!(feature = "wgpu") {
        names.push("wgpu");
    }
    if cfg!(feature = "cuda") {
        names.push("cuda");
    }
    names
}

/// Maps a device name (`cpu`, `flex`, `ndarray`, `wgpu`, `cuda`, `cuda:N`) to a burn device.
///
/// GPU constructors are only reached when the user asks for them, because building a CUDA
/// device without a driver panics inside burn. A GPU device is started at once with one tiny
/// operation (computing `1 + 2`), so a machine without a usable GPU gets an [`LmError::Device`]
/// here rather than a panic deep inside the backend at the first real operation.
pub fn device_from_name(name: &str) -> Result<Device> {
    let lower = name.trim().to_ascii_lowercase();
    let not_built = |feature: &str| LmError::Device {
        name: name.to_string(),
        detail: format!(
            "this build has no `{feature}` backend; rebuild with `--features {feature}` (available here: {})",
            available_devices().join(", ")
        ),
    };
    match lower.as_str() {
        "cpu" => cpu_device().ok_or_else(|| not_built("flex")),
        "flex" => flex_device().ok_or_else(|| not_built("flex")),
        "ndarray" => ndarray_device().ok_or_else(|| not_built("ndarray")),
        "wgpu" => start_gpu(name, "wgpu", wgpu_device).ok_or_else(|| not_built("wgpu"))?,
        s if s == "cuda" || s.starts_with("cuda:") => {
            let index = match s.strip_prefix("cuda:") {
                Some(i) => i.parse::<usize>().map_err(|_| LmError::Device {
                    name: name.to_string(),
                    detail: format!("expected `cuda` or `cuda:N` with N a GPU index, found `{s}`"),
                })?,
                None => 0,
            };
            start_gpu(name, &format!("cuda:{index}"), || cuda_device(index))
                .ok_or_else(|| not_built("cuda"))?
        }
        _ => Err(LmError::Device {
            name: name.to_string(),
            detail: format!(
                "unknown device; expected one of {}",
                available_devices().join(", ")
            ),
        }),
    }
}

/// Reads [`DEVICE_ENV`] (default `cpu`) and maps it with [`device_from_name`].
pub fn device_from_env() -> Result<Device> {
    let name = std::env::var(DEVICE_ENV).unwrap_or_else(|_| "cpu".to_string());
    device_from_name(&name)
}

/// Builds a GPU device with `make` (`None` when its backend is not compiled in) and runs one
/// tiny operation on it, turning a panic of the backend (no driver, no GPU, no adapter) into
/// [`LmError::Device`] with the backend's own message. The outcome is kept per device (`key`,
/// e.g. `cuda:0`) for the rest of the process: a backend whose start panicked is not started
/// again (its half-initialised state could hang), and a started one is not probed again.
fn start_gpu(
    name: &str,
    key: &str,
    make: impl FnOnce() -> Option<Device>,
) -> Option<Result<Device>> {
    type Started = std::result::Result<Device, String>;
    static STARTED: OnceLock<Mutex<HashMap<String, Started>>> = OnceLock::new();
    let mut started = STARTED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let outcome = match started.get(key) {
        Some(outcome) => outcome.clone(),
        None => {
            let outcome = probe(make)?;
            started.insert(key.to_string(), outcome.clone());
            outcome
        }
    };
    Some(outcome.map_err(|detail| LmError::Device {
        name: name.to_string(),
        detail,
    }))
}

/// `make`'s device after computing `1 + 2` on it, or why that failed.
fn probe(make: impl FnOnce() -> Option<Device>) -> Option<std::result::Result<Device, String>> {
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        make().map(|device| {
            let sum = burn::tensor::Tensor::<1>::from_floats([1.0, 2.0], &device).sum();
            let value = sum
                .into_data()
                .try_into_vec::<f32>()
                .ok()
                .and_then(|v| v.first().copied());
            (device, value)
        })
    }));
    match started {
        Ok(None) => None,
        Ok(Some((device, Some(3.0)))) => Some(Ok(device)),
        Ok(Some((_, v))) => Some(Err(format!(
            "the backend started but computed 1 + 2 = {v:?}; the GPU or its driver is not usable"
        ))),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "no message".to_string());
            Some(Err(format!(
                "the backend could not start (no GPU, no driver or no adapter on this machine?): {message} (a panic message printed above by the backend's own thread, if any, names the cause)"
            )))
        }
    }
}

fn cpu_device() -> Option<Device> {
    flex_device().or_else(ndarray_device)
}

fn flex_device() -> Option<Device> {
    #[cfg(feature = "flex")]
    {
        Some(Device::flex())
    }
    #[cfg(not(feature = "flex"))]
    {
        None
    }
}

#[allow(deprecated)] // burn marks ndarray deprecated in favour of flex; we keep it measurable.
fn ndarray_device() -> Option<Device> {
    #[cfg(feature = "ndarray")]
    {
        Some(Device::ndarray())
    }
    #[cfg(not(feature = "ndarray"))]
    {
        None
    }
}

fn wgpu_device() -> Option<Device> {
    #[cfg(feature = "wgpu")]
    {
        Some(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice))
    }
    #[cfg(not(feature = "wgpu"))]
    {
        None
    }
}

fn cuda_device(index: usize) -> Option<Device> {
    #[cfg(feature = "cuda")]
    {
        Some(Device::cuda(index))
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = index;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_available() {
        assert!(device_from_name("cpu").is_ok());
        assert!(device_from_name(" CPU ").is_ok());
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let err = device_from_name("tpu").unwrap_err().to_string();
        assert!(err.contains("unknown device"), "{err}");
        assert!(err.contains("cpu"), "{err}");
    }

    #[test]
    fn bad_cuda_index_is_rejected() {
        let err = device_from_name("cuda:x").unwrap_err().to_string();
        assert!(
            err.contains("cuda:N") || err.contains("no `cuda` backend"),
            "{err}"
        );
    }

    /// With the `cuda` feature and no usable GPU (this project's build machines), asking for
    /// `cuda` is an error that says the backend could not start, not a panic.
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_without_a_gpu_is_an_error_not_a_panic() {
        match device_from_name("cuda") {
            Ok(_) => eprintln!("note: a CUDA GPU is present; nothing to check"),
            Err(e) => assert!(e.to_string().contains("could not start"), "{e}"),
        }
    }

    #[cfg(feature = "wgpu")]
    #[test]
    fn wgpu_without_a_gpu_is_an_error_not_a_panic() {
        match device_from_name("wgpu") {
            Ok(_) => eprintln!("note: a wgpu adapter is present; nothing to check"),
            Err(e) => assert!(e.to_string().contains("could not start"), "{e}"),
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn missing_backend_says_which_feature() {
        let err = device_from_name("cuda").unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
