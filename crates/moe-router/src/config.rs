//! [`MoeConfig`]: what a mixture of LoRA experts is made of and how it routes. Every default is
//! written once, as a named function, with its source; paper-vs-code ambiguities default to the
//! authors' code (Rocket, `Yaphabates/Rocket:LoRAMoE/src/peft/tuners/mmoelora.py`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{MoeError, Result};

/// One expert: a PEFT LoRA adapter directory and the name it goes by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpertSpec {
    /// The expert's name (unique; also its directory name under `experts/` when saved).
    pub name: String,
    /// The PEFT adapter directory (`adapter_config.json` + `adapter_model.safetensors`).
    /// Relative paths in a saved `moe_config.json` are relative to the mixture directory.
    pub path: PathBuf,
}

/// Where routers sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RouterPlacement {
    /// One router per adapted module (per layer and projection), as the authors' code
    /// (`lora_gate` in every `MMOELoraLinear`). The only placement so far: a router per
    /// transformer block would need one input width for q/k/v/o/gate/up/down, which differ.
    #[default]
    PerModule,
}

/// How router weights start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouterInit {
    /// `U(-1/√d_in, 1/√d_in)`, PyTorch's `nn.Linear` default (Kaiming-uniform with `a = √5`),
    /// as the authors' code; seeded by [`MoeConfig::seed`] and the module name.
    #[default]
    Kaiming,
    /// All zeros: uniform gates `1/E` until trained (with `top_k = E` this is the equal-weight
    /// static mix).
    Zero,
    /// Training-free Arrow routing (Ostapenko et al. 2024; PEFT `ArrowConfig`): row `e` is the
    /// top right-singular vector of expert `e`'s `ΔW` in that module, logits are `|x · v_e|`.
    Arrow,
}

/// Default `top_k` (2): Rocket's code routes each token to its top-2 experts.
pub fn default_top_k() -> usize {
    2
}
/// Default router seed (0).
pub fn default_seed() -> u64 {
    0
}
/// Default Switch balance-loss coefficient (0.0): the authors' code has no auxiliary loss.
pub fn default_balance_loss() -> f32 {
    0.0
}
/// Default router z-loss coefficient (0.0): not in the authors' code (ST-MoE uses 1e-3).
pub fn default_z_loss() -> f32 {
    0.0
}

/// A mixture of LoRA experts (`E` = `experts.len()`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoeConfig {
    /// The experts, in order (expert `e` is `experts[e]` in every module).
    pub experts: Vec<ExpertSpec>,
    /// Experts kept per token, `1..=E`; `E` is dense soft routing. Default 2 (Rocket code).
    #[serde(default = "default_top_k")]
    pub top_k: usize,
    /// Where routers sit. Default per module (Rocket code).
    #[serde(default)]
    pub placement: RouterPlacement,
    /// How routers start. Default Kaiming-uniform (Rocket code: `nn.Linear` default init).
    #[serde(default)]
    pub router_init: RouterInit,
    /// Seed of the router initialisation.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Coefficient of the Switch load-balancing loss ([`crate::losses::switch_balance_loss`]).
    /// Default 0.0 (Rocket code has none; MixLoRA uses 0.001).
    #[serde(default = "default_balance_loss")]
    pub balance_loss: f32,
    /// Coefficient of the router z-loss ([`crate::losses::router_z_loss`]). Default 0.0.
    #[serde(default = "default_z_loss")]
    pub z_loss: f32,
}

impl MoeConfig {
    /// A config with these experts and every other field at its default.
    pub fn new(experts: Vec<ExpertSpec>) -> Self {
        Self {
            experts,
            top_k: default_top_k(),
            placement: RouterPlacement::default(),
            router_init: RouterInit::default(),
            seed: default_seed(),
            balance_loss: default_balance_loss(),
            z_loss: default_z_loss(),
        }
    }

    /// Sets `top_k`.
    pub fn with_top_k(mut self, k: usize) -> Self {
        self.top_k = k;
        self
    }

    /// Sets the router initialisation.
    pub fn with_router_init(mut self, init: RouterInit) -> Self {
        self.router_init = init;
        self
    }

    /// Sets the router seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Number of experts `E`.
    pub fn num_experts(&self) -> usize {
        self.experts.len()
    }

    /// Checks the list of experts (non-empty, no name or directory twice) and `top_k`.
    pub fn validate(&self) -> Result<()> {
        let e = self.experts.len();
        if e == 0 {
            return Err(MoeError::NoExperts);
        }
        for (i, a) in self.experts.iter().enumerate() {
            if a.name.is_empty() || a.name.contains(['/', '\\']) || a.name == ".." || a.name == "."
            {
                return Err(MoeError::BadExpertName {
                    name: a.name.clone(),
                });
            }
            for b in &self.experts[..i] {
                if a.name == b.name {
                    return Err(MoeError::DuplicateExpert {
                        name: a.name.clone(),
                        detail: "same name".into(),
                    });
                }
                let same_dir = a.path == b.path
                    || matches!(
                        (a.path.canonicalize(), b.path.canonicalize()),
                        (Ok(x), Ok(y)) if x == y
                    );
                if same_dir {
                    return Err(MoeError::DuplicateExpert {
                        name: a.name.clone(),
                        detail: format!(
                            "directory {} is also expert {:?}",
                            a.path.display(),
                            b.name
                        ),
                    });
                }
            }
        }
        if self.top_k == 0 || self.top_k > e {
            return Err(MoeError::BadTopK {
                k: self.top_k,
                experts: e,
            });
        }
        Ok(())
    }

    /// The mix that runs this mixture: `ExpertMix::Routed { top_k }` (`None` when `k = E`).
    pub fn mix(&self) -> lm_core::model::ExpertMix {
        lm_core::model::ExpertMix::Routed {
            top_k: (self.top_k < self.experts.len()).then_some(self.top_k),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, path: &str) -> ExpertSpec {
        ExpertSpec {
            name: name.into(),
            path: path.into(),
        }
    }

    #[test]
    fn defaults_round_trip_and_fill_in() {
        let c: MoeConfig =
            serde_json::from_str(r#"{"experts": [{"name": "a", "path": "x"}]}"#).unwrap();
        assert_eq!(c, MoeConfig::new(vec![spec("a", "x")]));
        assert_eq!(c.top_k, 2);
        assert_eq!(c.router_init, RouterInit::Kaiming);
        let text = serde_json::to_string(&c.clone().with_router_init(RouterInit::Arrow)).unwrap();
        assert!(text.contains(r#""router_init":"arrow""#));
        let back: MoeConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back.router_init, RouterInit::Arrow);
    }

    #[test]
    fn validation_refuses_each_bad_config() {
        assert!(matches!(
            MoeConfig::new(vec![]).validate(),
            Err(MoeError::NoExperts)
        ));
        let two = vec![spec("a", "x"), spec("b", "y")];
        assert!(MoeConfig::new(two.clone()).validate().is_ok());
        for k in [0, 3] {
            assert!(matches!(
                MoeConfig::new(two.clone()).with_top_k(k).validate(),
                Err(MoeError::BadTopK { experts: 2, .. })
            ));
        }
        let err = MoeConfig::new(vec![spec("a", "x"), spec("a", "y")])
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");
        let err = MoeConfig::new(vec![spec("a", "x"), spec("b", "x")])
            .with_top_k(1)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("also expert"), "{err}");
    }
}
