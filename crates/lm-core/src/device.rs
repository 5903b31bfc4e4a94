//! The one place that turns a device name into a burn [`Device`].
//!
//! Names: `cpu` (the default CPU backend: `flex` when compiled in, else `ndarray`), `flex`,
//! `ndarray` (explicit CPU backends, for benchmarks), `wgpu` and `cuda` (behind the cargo
//! features of the same name). The CLI's `--device` flag and the `OPENEXPERT_DEVICE`
//! environment variable both go through [`device_from_name`]; no other file names a backend.

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
/// device without a driver panics inside burn.
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
        "wgpu" => wgpu_device().ok_or_else(|| not_built("wgpu")),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let index = match s.strip_prefix("cuda:") {
                Some(i) => i.parse::<usize>().map_err(|_| LmError::Device {
                    name: name.to_string(),
                    detail: format!("expected `cuda` or `cuda:N` with N a GPU index, found `{s}`"),
                })?,
                None => 0,
            };
            cuda_device(index).ok_or_else(|| not_built("cuda"))
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

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn missing_backend_says_which_feature() {
        let err = device_from_name("cuda").unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
