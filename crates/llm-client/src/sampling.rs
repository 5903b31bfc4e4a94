//! [`Sampling`]: the generation settings of one chat call, part of its cache key.

use serde::{Deserialize, Serialize};

/// How the endpoint should generate one answer. The default is greedy decoding of at most 256
/// tokens, so that a call is reproducible and its cache entry meaningful.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sampling {
    /// Sampling temperature, >= 0; 0 is greedy (default 0).
    pub temperature: f32,
    /// Nucleus sampling mass in (0, 1]; 1 disables it (default 1).
    pub top_p: f32,
    /// Most new tokens (default 256).
    pub max_tokens: usize,
    /// Stop strings, cut from the answer (default none).
    pub stop: Vec<String>,
    /// Sampler seed, for reproducible sampling (default none: the server's choice).
    pub seed: Option<u64>,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            max_tokens: 256,
            stop: Vec::new(),
            seed: None,
        }
    }
}

impl Sampling {
    /// Greedy decoding of at most `max_tokens` tokens.
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            max_tokens,
            ..Self::default()
        }
    }

    /// Whether the settings are usable: temperature >= 0 and finite, top_p in (0, 1],
    /// max_tokens >= 1. The error says what was found.
    pub fn check(&self) -> Result<(), String> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(format!(
                "expected temperature >= 0, found {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("expected top_p in (0, 1], found {}", self.top_p));
        }
        if self.max_tokens == 0 {
            return Err("expected max_tokens >= 1, found 0".into());
        }
        Ok(())
    }
}
