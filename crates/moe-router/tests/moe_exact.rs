//! Exactness of the mixture on a tiny random decoder: reductions to plain adapters and static
//! mixes, router gradients against finite differences, balance loss at uniform routing,
//! save -> load -> identical logits, Arrow, routing statistics in generation, and every refusal.

use lm_core::burn::module::{Module, Param};
use lm_core::burn::tensor::{Device, Int, Tensor, TensorData};
use lm_core::generate::{GenerationConfig, generate};
use lm_core::model::random::tiny_language_model;
use lm_core::model::{Decoder, ExpertMix, LanguageModel};
use lora_zoo::apply::attach_adapters;
use lora_zoo::config::TargetModules;
use lora_zoo::{AdapterConfig, LoraAdapter, LoraModule};
use moe_router::{ExpertSpec, Moe, MoeConfig, MoeError, RouterInit, decoder_spec};
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn device() -> Device {
    lm_core::device::device_from_name("cpu").unwrap()
}

const BASE: &str = "HuggingFaceTB/SmolLM2-135M-Instruct";

/// A random adapter for the tiny decoder on modules ending in `suffixes` (all layers).
fn adapter(
    decoder: &Decoder,
    seed: u64,
    rank: usize,
    alpha: f64,
    rslora: bool,
    suffixes: &[&str],
) -> LoraAdapter {
    let mut rng = StdRng::seed_from_u64(seed);
    let scale = if rslora {
        alpha / (rank as f64).sqrt()
    } else {
        alpha / rank as f64
    } as f32;
    let mut modules = std::collections::BTreeMap::new();
    for (name, (d_in, d_out)) in decoder_spec(decoder).modules {
        if !suffixes.iter().any(|s| name.ends_with(s)) {
            continue;
        }
        let a = Array2::from_shape_fn((rank, d_in), |_| rng.random_range(-0.4f32..0.4));
        let b = Array2::from_shape_fn((d_out, rank), |_| rng.random_range(-0.4f32..0.4));
        modules.insert(name, LoraModule::new(a, b, alpha, scale).unwrap());
    }
    LoraAdapter {
        config: AdapterConfig {
            base_model_name_or_path: Some(BASE.into()),
            r: rank,
            lora_alpha: alpha,
            use_rslora: rslora,
            target_modules: Some(TargetModules::List(
                suffixes.iter().map(|s| s.to_string()).collect(),
            )),
            ..AdapterConfig::default()
        },
        modules,
    }
}

/// Three experts: different ranks, α ≠ r, one rsLoRA, one with an extra module (o_proj).
fn three(decoder: &Decoder) -> Vec<LoraAdapter> {
    vec![
        adapter(decoder, 1, 4, 8.0, false, &["q_proj", "v_proj"]),
        adapter(decoder, 2, 2, 16.0, true, &["q_proj", "v_proj", "o_proj"]),
        adapter(decoder, 3, 3, 3.0, false, &["q_proj", "v_proj"]),
    ]
}

fn specs(n: usize) -> Vec<ExpertSpec> {
    (0..n)
        .map(|i| ExpertSpec {
            name: format!("expert{i}"),
            path: format!("bank/expert{i}").into(),
        })
        .collect()
}

fn tokens(batch: usize, seq: usize, seed: u64) -> Vec<i64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..batch * seq).map(|_| rng.random_range(1..256)).collect()
}

fn logits(decoder: &Decoder, ids: &[i64], batch: usize, mix: &ExpertMix) -> Vec<f32> {
    let device = decoder.embed_tokens.weight.val().device();
    let t = Tensor::<2, Int>::from_data(
        TensorData::new(ids.to_vec(), [batch, ids.len() / batch]),
        &device,
    );
    decoder.forward(t, mix).into_data().iter::<f32>().collect()
}

use lm_core::testing::max_abs_diff as max_diff;

fn tiny(seed: u64) -> LanguageModel {
    tiny_language_model(seed, &device())
}

#[test]
fn one_expert_top1_equals_the_plain_adapter() {
    let m = tiny(1);
    let a = adapter(
        &m.decoder,
        9,
        4,
        8.0,
        true,
        &["q_proj", "v_proj", "down_proj"],
    );
    let ids = tokens(2, 7, 1);
    let mut plain = m.decoder.clone();
    attach_adapters(&mut plain, &[&a]).unwrap();
    let want = logits(&plain, &ids, 2, &ExpertMix::Static(vec![1.0]));
    let base = logits(&plain, &ids, 2, &ExpertMix::Base);
    let mut dec = m.decoder.clone();
    let moe = Moe::build(&mut dec, MoeConfig::new(specs(1)).with_top_k(1), &[a]).unwrap();
    let got = logits(&dec, &ids, 2, &moe.mix());
    assert!(max_diff(&got, &want) < 1e-5, "{}", max_diff(&got, &want));
    assert!(
        max_diff(&base, &want) > 1e-2,
        "the adapter changes the logits"
    );
}

#[test]
fn zero_router_dense_equals_the_equal_weight_static_mix() {
    let m = tiny(2);
    let adapters = three(&m.decoder);
    let ids = tokens(2, 6, 2);
    let mut plain = m.decoder.clone();
    let refs: Vec<&LoraAdapter> = adapters.iter().collect();
    attach_adapters(&mut plain, &refs).unwrap();
    let want = logits(&plain, &ids, 2, &ExpertMix::Static(vec![1.0 / 3.0; 3]));
    let mut dec = m.decoder.clone();
    let config = MoeConfig::new(specs(3))
        .with_top_k(3)
        .with_router_init(RouterInit::Zero);
    let moe = Moe::build(&mut dec, config, &adapters).unwrap();
    assert!(matches!(moe.mix(), ExpertMix::Routed { top_k: None }));
    let got = logits(&dec, &ids, 2, &moe.mix());
    assert!(max_diff(&got, &want) < 1e-5, "{}", max_diff(&got, &want));
    // Balance loss of uniform gates is exactly 1 (Σ_e f_e = 1, P_e = 1/E).
    let mut dec = dec;
    let moe = Moe {
        config: moe.config.clone().with_top_k(2),
        ..moe
    };
    let mut cfg = moe.config.clone();
    cfg.balance_loss = 1.0;
    let moe = Moe { config: cfg, ..moe };
    let rec = moe.record(&mut dec, true, true);
    let _ = logits(&dec, &ids, 2, &moe.mix());
    let aux = moe.aux_losses(&rec, None).unwrap();
    let balance = aux.balance.unwrap().into_scalar::<f32>();
    assert!((balance - 1.0).abs() < 1e-6, "{balance}");
    let stats = rec.stats();
    assert_eq!(stats.len(), moe.modules.len());
    assert!(stats.iter().all(|s| s.tokens == 12));
    assert!(
        stats
            .iter()
            .all(|s| s.mean_gate.iter().all(|g| (g - 1.0 / 3.0).abs() < 1e-6))
    );
}

#[test]
fn top_k_differs_from_dense_and_builds_deterministically() {
    let m = tiny(3);
    let adapters = three(&m.decoder);
    let ids = tokens(1, 9, 3);
    let build = |seed: u64, k: usize| {
        let mut dec = m.decoder.clone();
        let moe = Moe::build(
            &mut dec,
            MoeConfig::new(specs(3)).with_top_k(k).with_seed(seed),
            &adapters,
        )
        .unwrap();
        logits(&dec, &ids, 1, &moe.mix())
    };
    let a = build(5, 2);
    assert_eq!(a, build(5, 2), "same seed, same routers");
    assert!(
        max_diff(&a, &build(6, 2)) > 1e-4,
        "another seed, other routers"
    );
    assert!(max_diff(&a, &build(5, 3)) > 1e-4, "top-2 is not dense");
    assert!(a.iter().all(|v| v.is_finite()));
}

/// Loss Σ logits · probe of a 1 × 5 sequence.
fn probe_loss(decoder: &Decoder, mix: &ExpertMix, probe: &[f32]) -> Tensor<1> {
    let device = decoder.embed_tokens.weight.val().device();
    let ids = tokens(1, 5, 11);
    let t = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, 5]), &device);
    let p = Tensor::<3>::from_data(TensorData::new(probe.to_vec(), [1, 5, 256]), &device);
    (decoder.forward(t, mix) * p).sum()
}

fn set_router(decoder: &mut Decoder, module: &str, rows_burn: &[f32], d_in: usize, e: usize) {
    let device = decoder.embed_tokens.weight.val().device();
    let set = decoder
        .adapted_linear_mut(module)
        .unwrap()
        .experts
        .as_mut()
        .unwrap();
    let router = set.router.as_mut().unwrap();
    router.linear.weight = Param::from_tensor(Tensor::<2>::from_data(
        TensorData::new(rows_burn.to_vec(), [d_in, e]),
        &device,
    ));
}

#[test]
fn router_gradients_match_finite_differences() {
    let adev = device().autodiff();
    let mut rng = StdRng::seed_from_u64(4);
    let probe: Vec<f32> = (0..5 * 256).map(|_| rng.random_range(-1.0..1.0)).collect();
    for k in [3, 2] {
        let m = tiny_language_model(4, &adev);
        let adapters = three(&m.decoder);
        let mut dec = m.decoder.clone();
        let moe = Moe::build(&mut dec, MoeConfig::new(specs(3)).with_top_k(k), &adapters).unwrap();
        let mix = moe.mix();
        let module = "model.layers.0.self_attn.q_proj";
        let w0: Vec<f32> = {
            let set = dec
                .adapted_linear_mut(module)
                .unwrap()
                .experts
                .as_ref()
                .unwrap();
            set.router
                .as_ref()
                .unwrap()
                .linear
                .weight
                .val()
                .into_data()
                .iter::<f32>()
                .collect()
        };
        let d_in = w0.len() / 3;
        let grads = probe_loss(&dec, &mix, &probe).backward();
        let analytic: Vec<f32> = {
            let set = dec
                .adapted_linear_mut(module)
                .unwrap()
                .experts
                .as_ref()
                .unwrap();
            let w = set.router.as_ref().unwrap().linear.weight.val();
            w.grad(&grads).unwrap().into_data().iter::<f32>().collect()
        };
        assert!(analytic.iter().any(|g| g.abs() > 1e-3), "the router learns");
        // Finite differences on the plain device.
        let mut plain = dec.clone().to_device(&device());
        let rec = moe.record(&mut plain, true, false);
        let mut eval = |w: &[f32]| {
            set_router(&mut plain, module, w, d_in, 3);
            rec.reset();
            let loss = f64::from(probe_loss(&plain, &mix, &probe).into_scalar::<f32>());
            let routed = rec
                .modules
                .iter()
                .find(|(n, _)| n == module)
                .unwrap()
                .1
                .stats()
                .routed;
            (loss, routed)
        };
        let h = 1e-2f32;
        let mut checked = 0;
        for i in (0..w0.len()).step_by(7) {
            let (mut wp, mut wm) = (w0.clone(), w0.clone());
            wp[i] += h;
            wm[i] -= h;
            let ((lp, rp), (lm, rm)) = (eval(&wp), eval(&wm));
            if rp != rm {
                continue; // the top-k set changed: not differentiable there
            }
            checked += 1;
            let numeric = (lp - lm) / (2.0 * f64::from(h));
            let diff = (numeric - f64::from(analytic[i])).abs();
            assert!(
                diff < 5e-3 * (1.0 + numeric.abs()),
                "k {k} weight {i}: numeric {numeric} vs autodiff {}",
                analytic[i]
            );
        }
        assert!(checked >= 10, "k {k}: only {checked} entries checked");
    }
}

#[test]
fn save_then_load_gives_identical_logits() {
    let m = tiny(5);
    let adapters = three(&m.decoder);
    let ids = tokens(2, 6, 5);
    for init in [RouterInit::Kaiming, RouterInit::Arrow] {
        let mut dec = m.decoder.clone();
        let moe = Moe::build(
            &mut dec,
            MoeConfig::new(specs(3)).with_router_init(init),
            &adapters,
        )
        .unwrap();
        let want = logits(&dec, &ids, 2, &moe.mix());
        let dir = tempfile::tempdir().unwrap();
        moe.save(&dec, dir.path()).unwrap();
        for f in [
            "moe_config.json",
            "router.safetensors",
            "experts/expert1/adapter_config.json",
            "experts/expert1/adapter_model.safetensors",
        ] {
            assert!(dir.path().join(f).is_file(), "{f}");
        }
        let mut fresh = tiny(5).decoder;
        let loaded = Moe::load(&mut fresh, dir.path()).unwrap();
        assert_eq!(loaded.config.router_init, init);
        assert_eq!(loaded.modules, moe.modules);
        let got = logits(&fresh, &ids, 2, &loaded.mix());
        assert!(
            max_diff(&got, &want) < 1e-6,
            "{init:?}: {}",
            max_diff(&got, &want)
        );
        // Each saved expert is a PEFT adapter of its own rank, equal to the folded original.
        let saved = LoraAdapter::load(&dir.path().join("experts/expert1")).unwrap();
        let orig = &adapters[1];
        assert_eq!(saved.modules.len(), orig.modules.len());
        for (name, m) in &orig.modules {
            let s = &saved.modules[name];
            assert_eq!(s.rank(), m.rank());
            let (a, b) = (s.delta(), m.delta());
            let d = (&a - &b).iter().fold(0f32, |x, y| x.max(y.abs()));
            assert!(d < 1e-5, "{name}: ΔW differs by {d}");
        }
        // Another base model (same shapes, other weights) is refused.
        let mut other = tiny(6).decoder;
        let err = Moe::load(&mut other, dir.path()).unwrap_err();
        assert!(matches!(err, MoeError::BaseMismatch { .. }), "{err}");
    }
}

#[test]
fn arrow_routes_by_absolute_projection_on_prototypes() {
    let m = tiny(7);
    let adapters = three(&m.decoder);
    let mut dec = m.decoder.clone();
    let moe = Moe::build(
        &mut dec,
        MoeConfig::new(specs(3)).with_router_init(RouterInit::Arrow),
        &adapters,
    )
    .unwrap();
    let weights = moe.router_weights(&dec).unwrap();
    let (rows, [e, d_in]) = &weights["model.layers.1.self_attn.v_proj"];
    assert_eq!(*e, 3);
    for x in 0..3 {
        let v = &rows[x * d_in..(x + 1) * d_in];
        let norm: f32 = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "prototype {x} has norm {norm}");
    }
    // o_proj is targeted by expert 1 only: the others' prototypes are zero there.
    let (rows, [_, d_in]) = &weights["model.layers.0.self_attn.o_proj"];
    assert!(rows[..*d_in].iter().all(|&v| v == 0.0));
    let rec = moe.record(&mut dec, true, true);
    let _ = logits(&dec, &tokens(1, 8, 7), 1, &moe.mix());
    let kept = rec.take_logits();
    let (_, l) = kept
        .iter()
        .find(|(n, _)| n.ends_with("0.self_attn.q_proj"))
        .unwrap();
    let values: Vec<f32> = l[0].clone().into_data().iter::<f32>().collect();
    assert!(values.iter().all(|&v| v >= 0.0), "Arrow logits are |x·v|");
}

#[test]
fn routing_statistics_are_collected_during_generation() {
    let mut m = tiny(8);
    let adapters = three(&m.decoder);
    let moe = Moe::build(&mut m.decoder, MoeConfig::new(specs(3)), &adapters).unwrap();
    let rec = moe.record(&mut m.decoder, true, false);
    let config = GenerationConfig {
        max_new_tokens: 4,
        stop_at_eos: false,
        ..Default::default()
    };
    let prompt: Vec<u32> = (1..6).collect();
    generate(&m, &[prompt], &config, &moe.mix()).unwrap();
    let stats = rec.stats();
    // Prefill of 5 tokens, then one token per decoding step.
    assert!(stats.iter().all(|s| s.tokens >= 8), "{:?}", stats[0]);
    for s in &stats {
        assert!((s.load_share.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(s.normalized_entropy > 0.0 && s.normalized_entropy <= 1.0);
    }
    let overall = rec.overall().unwrap();
    assert_eq!(overall.load_share.len(), 3);
    // `tokens` of the pooled statistics counts tokens, not token-module pairs.
    assert_eq!(overall.tokens, stats[0].tokens);
    moe.stop_recording(&mut m.decoder);
    rec.reset();
    generate(&m, &[vec![1, 2]], &config, &moe.mix()).unwrap();
    assert_eq!(rec.stats()[0].tokens, 0, "stopped recorders see nothing");
}

#[test]
fn invalid_mixtures_are_refused_with_named_errors() {
    let m = tiny(9);
    let dec = || m.decoder.clone();
    let ok = three(&m.decoder);
    // top_k, empty, duplicates.
    for k in [0, 4] {
        let err = Moe::build(&mut dec(), MoeConfig::new(specs(3)).with_top_k(k), &ok).unwrap_err();
        assert!(matches!(err, MoeError::BadTopK { experts: 3, .. }), "{err}");
    }
    assert!(matches!(
        Moe::build(&mut dec(), MoeConfig::new(vec![]), &[]),
        Err(MoeError::NoExperts)
    ));
    let mut twice = specs(2);
    twice[1].path = twice[0].path.clone();
    let err = Moe::build(&mut dec(), MoeConfig::new(twice), &ok[..2]).unwrap_err();
    assert!(matches!(err, MoeError::DuplicateExpert { .. }), "{err}");
    // An expert of another base (a wider model's module shapes).
    let wide_cfg = lm_core::model::DecoderConfig {
        hidden_size: 48,
        ..lm_core::model::DecoderConfig::tiny(256)
    };
    let wide = lm_core::model::loader::build_decoder(
        &wide_cfg,
        &lm_core::model::random::TensorMap::random_decoder(&wide_cfg, 1),
        &device(),
    )
    .unwrap();
    let foreign = adapter(&wide, 1, 2, 2.0, false, &["q_proj"]);
    let err = Moe::build(
        &mut dec(),
        MoeConfig::new(specs(2)),
        &[ok[0].clone(), foreign],
    )
    .unwrap_err();
    assert!(
        matches!(err, MoeError::ExpertForAnotherBase { ref expert, .. } if expert == "expert1"),
        "{err}"
    );
    assert!(
        std::error::Error::source(&err).is_some(),
        "the cause is kept"
    );
    // Experts naming different base models.
    let mut renamed = ok[1].clone();
    renamed.config.base_model_name_or_path = Some("meta-llama/Llama-2-7b-hf".into());
    let err = Moe::build(
        &mut dec(),
        MoeConfig::new(specs(2)),
        &[ok[0].clone(), renamed],
    )
    .unwrap_err();
    assert!(matches!(err, MoeError::BaseModelNames { .. }), "{err}");
    // Disjoint target modules.
    let mlp = adapter(&m.decoder, 5, 2, 2.0, false, &["gate_proj", "up_proj"]);
    let err = Moe::build(&mut dec(), MoeConfig::new(specs(2)), &[ok[0].clone(), mlp]).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, MoeError::DisjointTargets { .. }), "{err}");
    assert!(
        text.contains("gate_proj") && text.contains("q_proj"),
        "{text}"
    );
    // A failed build leaves the decoder as it was.
    let mut d = dec();
    let _ = Moe::build(&mut d, MoeConfig::new(specs(3)).with_top_k(0), &ok);
    assert!(d.adapted_linears().iter().all(|(_, l)| l.experts.is_none()));
}

#[test]
fn a_corrupt_router_file_is_refused() {
    let m = tiny(10);
    let adapters = three(&m.decoder);
    let mut dec = m.decoder.clone();
    let moe = Moe::build(&mut dec, MoeConfig::new(specs(3)), &adapters).unwrap();
    let dir = tempfile::tempdir().unwrap();
    moe.save(&dec, dir.path()).unwrap();
    // Overwrite the first router with a NaN.
    let path = dir.path().join("router.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors[0].2[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    let err = Moe::load(&mut tiny(10).decoder, dir.path()).unwrap_err();
    assert!(matches!(err, MoeError::NonFiniteRouter { .. }), "{err}");
}

fn train_data() -> Vec<lm_core::train::TrainExample> {
    (0..12)
        .map(|i| lm_core::train::TrainExample::PromptResponse {
            prompt: format!("q{i}:"),
            response: format!(" {}", "xy".repeat(i % 4 + 1)),
        })
        .collect()
}

fn train_config(steps: usize) -> lm_core::train::TrainConfig {
    lm_core::train::TrainConfig::new(lm_core::train::LoraTrainConfig::new())
        .with_max_steps(Some(steps))
        .with_batch_size(4)
        .with_lr(5e-2)
        .with_warmup_ratio(0.0)
        .with_max_len(32)
}

/// Router-only training moves the routers and nothing else, lowers the loss, and the balance
/// loss takes part in the objective; router + experts moves the experts too.
#[test]
fn training_moves_routers_and_optionally_experts() {
    use lm_core::train::{LoraTrainer, PromptFormat, Trainable};
    use moe_router::train::MoeTrainable;
    let mut m = tiny(3);
    let adapters = three(&m.decoder);
    let config = MoeConfig {
        balance_loss: 0.01,
        ..MoeConfig::new(specs(3)).with_top_k(2)
    };
    let moe = Moe::build(&mut m.decoder, config, &adapters).unwrap();
    let start = MoeTrainable::new(&moe, &m.decoder, true).unwrap();
    let (trained, report) = LoraTrainer::new(&m, train_config(8))
        .with_format(PromptFormat::raw())
        .fit_trainable(start.clone(), &train_data(), &train_data())
        .unwrap();
    assert_eq!(report.trainable_params, start.values().len());
    let (first, last) = (report.losses[0], *report.losses.last().unwrap());
    assert!(last < first, "loss {first} -> {last}");
    let eval = report.eval_losses.last().unwrap().1;
    assert!(eval < report.base_eval_loss.unwrap() + 10.0 && eval.is_finite());
    // Only the router slots changed.
    // Whether slot `i`'s values differ between two parameter sets of the same layout.
    fn changed(a: &MoeTrainable, b: &MoeTrainable, i: usize) -> bool {
        let slots = a.slots();
        let from = slots[i].offset;
        let to = slots.get(i + 1).map_or(a.values().len(), |s| s.offset);
        a.values()[from..to] != b.values()[from..to]
    }
    let slots = start.slots();
    assert!(slots.iter().all(|s| s.name.ends_with(".router")));
    assert!((0..slots.len()).all(|i| changed(&start, &trained, i)));
    // Applied to the decoder, the trained routers change the logits.
    let ids = tokens(2, 5, 4);
    let before = logits(&m.decoder, &ids, 2, &moe.mix());
    trained.apply(&mut m.decoder).unwrap();
    let after = logits(&m.decoder, &ids, 2, &moe.mix());
    assert!(max_diff(&before, &after) > 1e-4);

    // Router + experts: expert slots move as well.
    let mut m = tiny(3);
    let moe = Moe::build(&mut m.decoder, MoeConfig::new(specs(3)), &adapters).unwrap();
    let start = MoeTrainable::new(&moe, &m.decoder, false).unwrap();
    let (trained, _) = LoraTrainer::new(&m, train_config(3))
        .with_format(PromptFormat::raw())
        .fit_trainable(start.clone(), &train_data(), &[])
        .unwrap();
    let slots = start.slots();
    let experts: Vec<usize> = (0..slots.len())
        .filter(|&i| slots[i].name.contains(".experts"))
        .collect();
    assert!(!experts.is_empty());
    assert!(experts.iter().all(|&i| changed(&start, &trained, i)));
}

/// A run killed after its checkpoint resumes to the same parameters as an uninterrupted run.
#[test]
fn mixture_training_resumes_exactly_from_a_checkpoint() {
    use lm_core::train::{LoraTrainer, PromptFormat, Trainable};
    use moe_router::train::MoeTrainable;
    let mut m = tiny(5);
    let adapters = three(&m.decoder);
    let moe = Moe::build(&mut m.decoder, MoeConfig::new(specs(3)), &adapters).unwrap();
    let start = MoeTrainable::new(&moe, &m.decoder, true).unwrap();
    let run = |steps: usize, dir: &std::path::Path, resume: bool| {
        LoraTrainer::new(&m, train_config(6).with_checkpoint_every(steps))
            .with_format(PromptFormat::raw())
            .with_checkpoints(dir, resume)
            .fit_trainable(start.clone(), &train_data(), &[])
            .unwrap()
            .0
    };
    let whole = tempfile::tempdir().unwrap();
    let straight = run(6, whole.path(), false);
    let cut = tempfile::tempdir().unwrap();
    let _ = run(3, cut.path(), false);
    let ckpts: Vec<_> = std::fs::read_dir(cut.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // Keep only the step-3 checkpoint (the oldest), as if killed right after writing it.
    let keep = ckpts.iter().min().unwrap().clone();
    assert!(keep.ends_with("step-000003"), "{keep:?}");
    for p in ckpts.iter().filter(|p| **p != keep) {
        let _ = std::fs::remove_dir_all(p);
    }
    let resumed = run(3, cut.path(), true);
    assert_eq!(straight.values(), resumed.values());
}

#[test]
fn loading_what_is_not_a_mixture_says_what_is_missing() {
    let m = tiny(5);
    let adapters = three(&m.decoder);
    let mut dec = m.decoder.clone();
    let moe = Moe::build(&mut dec, MoeConfig::new(specs(3)), &adapters).unwrap();
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("moe");
    moe.save(&dec, &dir).unwrap();
    let load = |p: &std::path::Path| Moe::load(&mut tiny(5).decoder, p).unwrap_err();

    // No such directory, a file, a directory without its config.
    let err = load(&root.path().join("nope"));
    assert!(matches!(err, MoeError::NotAMixture { .. }), "{err}");
    assert!(err.to_string().contains("no such directory"), "{err}");
    let file = root.path().join("file");
    std::fs::write(&file, "x").unwrap();
    assert!(load(&file).to_string().contains("found a file"));
    std::fs::remove_file(dir.join("moe_config.json")).unwrap();
    let err = load(&dir);
    assert!(err.to_string().contains("without moe_config.json"), "{err}");

    // A truncated router file: a named refusal that says how to recover.
    moe.save(&dec, &dir).unwrap();
    let router = dir.join("router.safetensors");
    let bytes = std::fs::read(&router).unwrap();
    std::fs::write(&router, &bytes[..100]).unwrap();
    let err = load(&dir);
    assert!(matches!(err, MoeError::Safetensors { .. }), "{err}");
    assert!(err.to_string().contains("moe build"), "{err}");
}

/// Padding is not routed traffic: the balance and z-losses of a training micro-batch do not
/// depend on what the padding tokens are, and they would without the trainer's token mask.
#[test]
fn aux_losses_leave_padding_out() {
    use lm_core::train::Trainable;
    use lm_core::train::data::{TokenizedExample, make_batches};
    use lm_core::train::trainer::loss_sum_with;
    use moe_router::train::MoeTrainable;
    let mut m = tiny(11);
    let adapters = three(&m.decoder);
    let config = MoeConfig {
        balance_loss: 1.0,
        z_loss: 1.0,
        ..MoeConfig::new(specs(3)).with_top_k(1)
    };
    let moe = Moe::build(&mut m.decoder, config, &adapters).unwrap();
    let trainable = MoeTrainable::new(&moe, &m.decoder, true).unwrap();
    let examples = vec![
        TokenizedExample {
            index: 0,
            ids: vec![5, 6, 7, 8, 9, 10],
            target: vec![false, false, false, true, true, true],
        },
        TokenizedExample {
            index: 1,
            ids: vec![11, 12, 13],
            target: vec![false, true, true],
        },
    ];
    let aux = |pad: u32, masked: bool| {
        let mut batch = make_batches(&examples, 2, 16, false, pad, None).remove(0);
        assert_eq!((batch.batch, batch.seq), (2, 6));
        assert_eq!(batch.token_weights().iter().sum::<f32>(), 9.0);
        let adev = device().autodiff();
        let mut decoder = m.decoder.clone().to_device(&adev).no_grad();
        trainable.attach_for_training(&mut decoder, &adev, 0);
        let _ = loss_sum_with(&decoder, &batch, &adev, &trainable.mix());
        if !masked {
            // As if padding were real tokens: what the losses saw before the mask.
            batch.real = vec![true; batch.batch * batch.seq];
        }
        trainable
            .aux_loss(&decoder, &batch, &adev)
            .expect("both coefficients are set")
            .into_scalar::<f32>()
    };
    let (a, b) = (aux(0, true), aux(40, true));
    assert!(
        (a - b).abs() < 1e-5,
        "masked aux loss moved with the pad id: {a} vs {b}"
    );
    let (c, d) = (aux(0, false), aux(40, false));
    assert!(
        (c - d).abs() > 1e-4,
        "unmasked aux loss should see the padding: {c} vs {d}"
    );
}

/// `Moe::route` counts every token of every text once and no padding, and leaves no recorder
/// behind.
#[test]
fn route_counts_the_texts_tokens_and_no_padding() {
    use lm_core::score::ScoreRequest;
    let mut m = tiny(12);
    let adapters = three(&m.decoder);
    let moe = Moe::build(&mut m.decoder, MoeConfig::new(specs(3)), &adapters).unwrap();
    let requests = vec![
        ScoreRequest::text((1..9).collect()),
        ScoreRequest::text(vec![3, 4]),
        ScoreRequest::text((10..15).collect()),
    ];
    let rec = moe.route(&mut m, &requests).unwrap();
    for s in rec.stats() {
        assert_eq!(s.tokens, 8 + 2 + 5, "{}", s.module);
        assert!((s.load_share.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }
    rec.reset();
    generate(&m, &[vec![1, 2]], &GenerationConfig::default(), &moe.mix()).unwrap();
    assert_eq!(rec.stats()[0].tokens, 0, "route removed its recorders");
}
