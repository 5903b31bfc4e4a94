//! The LoRA trainer on a tiny random model: it learns, its gradients are right, it resumes
//! exactly, and it refuses bad input clearly.

use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::module::Param;
use burn::tensor::{Tensor, TensorData};
use lm_core::LmError;
use lm_core::model::DecoderConfig;
use lm_core::model::adapted_linear::{AdaptedLinear, ExpertSet, linear_from_torch};
use lm_core::model::loader::build_decoder;
use lm_core::model::{ExpertMix, LanguageModel};
use lm_core::testing::test_device;
use lm_core::testing::{TensorMap, byte_tokenizer, tiny_language_model};
use lm_core::train::{
    LoraTrainConfig, LoraTrainer, PromptFormat, TrainConfig, TrainExample, evaluate_loss,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn mapping() -> Vec<TrainExample> {
    lm_core::testing::animal_sounds(4)
}

fn tiny() -> LanguageModel {
    tiny_language_model(11, &test_device())
}

fn all_targets() -> LoraTrainConfig {
    LoraTrainConfig::new()
        .with_r(8)
        .with_alpha(16.0)
        .with_dropout(0.0)
        .with_target_modules(
            [
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ]
            .map(String::from)
            .to_vec(),
        )
}

/// A tiny model whose final norm has a large gain, so that its logits can become confident
/// (with unit gains and ~U(±1/√d) embeddings the tied head caps the logits near ±3 and the loss
/// cannot go below ~2.5 whatever the adapter learns).
fn tiny_confident() -> LanguageModel {
    let device = test_device();
    let config = DecoderConfig::tiny(256);
    let mut weights = TensorMap::random_decoder(&config, 11);
    let d = config.hidden_size;
    weights
        .tensors
        .insert("model.norm.weight".into(), (vec![10.0; d], vec![d]));
    let decoder = build_decoder(&config, &weights, &device).unwrap();
    LanguageModel::from_parts(decoder, byte_tokenizer(), &device)
}

#[test]
fn a_tiny_model_learns_a_fixed_mapping_to_near_zero_loss() {
    let model = tiny_confident();
    let data = mapping();
    let config = TrainConfig::new(all_targets())
        .with_max_steps(Some(150))
        .with_lr(1e-2)
        .with_warmup_ratio(0.05)
        .with_batch_size(4);
    let before = evaluate_loss(&model, None, &data, &config, &PromptFormat::raw()).unwrap();
    let out = LoraTrainer::new(&model, config.clone())
        .with_format(PromptFormat::raw())
        .fit(&data, &data)
        .unwrap();
    let after = evaluate_loss(
        &model,
        Some(&out.weights),
        &data,
        &config,
        &PromptFormat::raw(),
    )
    .unwrap();
    assert!(
        before > 3.0,
        "a random model starts far from the mapping: {before}"
    );
    assert!(
        after < 0.05,
        "loss after training {after} (before {before})"
    );
    let (_, last_eval) = *out.report.eval_losses.last().unwrap();
    assert!((last_eval - after).abs() < 1e-4, "{last_eval} vs {after}");
    assert_eq!(out.report.steps, 150);
    assert!(out.report.tokens_per_second > 0.0);
}

/// Loss = Σ y ⊙ w for a fixed random `w`, so d loss / d y = w.
fn probe_loss(lin: &AdaptedLinear, x: Tensor<3>, w: Tensor<3>, mix: &ExpertMix) -> Tensor<1> {
    (lin.forward(x, mix) * w).sum()
}

#[test]
fn adapted_linear_gradients_match_finite_differences() {
    let device = test_device();
    let adev = device.clone().autodiff();
    let (d_in, d_out, r, e) = (6, 5, 2, 2);
    let mut rng = StdRng::seed_from_u64(5);
    let mut rand = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
    let w_base = rand(d_out * d_in);
    let a0 = rand(d_in * e * r);
    let b0 = rand(e * r * d_out);
    let router_w = rand(d_in * e);
    let x = rand(2 * 3 * d_in);
    let probe = rand(2 * 3 * d_out);
    let build = |a: &[f32], b: &[f32], track: bool| {
        let dev = if track { &adev } else { &device };
        let mut at = Tensor::<2>::from_data(TensorData::new(a.to_vec(), [d_in, e * r]), dev);
        let mut bt = Tensor::<2>::from_data(TensorData::new(b.to_vec(), [e * r, d_out]), dev);
        if track {
            at = at.require_grad();
            bt = bt.require_grad();
        }
        let mut lin = AdaptedLinear::new(linear_from_torch(&w_base, d_out, d_in, None, dev));
        let router = linear_from_torch(&router_w, e, d_in, None, dev);
        lin.experts = Some(ExpertSet {
            a: Param::from_tensor(at.clone()),
            b: Param::from_tensor(bt.clone()),
            router: Some(router.into()),
            scales: vec![0.5, 2.0],
            rank: r,
            dropout: None,
        });
        (lin, at, bt)
    };
    let tensor3 = |v: &[f32], d: usize, dev| {
        Tensor::<3>::from_data(TensorData::new(v.to_vec(), [2, 3, d]), dev)
    };
    for mix in [
        ExpertMix::Static(vec![0.7, -1.3]),
        ExpertMix::PerRow(vec![Some(1), None]),
        ExpertMix::Routed { top_k: None },
    ] {
        let (lin, at, bt) = build(&a0, &b0, true);
        let loss = probe_loss(
            &lin,
            tensor3(&x, d_in, &adev),
            tensor3(&probe, d_out, &adev),
            &mix,
        );
        let grads = loss.backward();
        let ga: Vec<f32> = at.grad(&grads).unwrap().into_data().try_into_vec().unwrap();
        let gb: Vec<f32> = bt.grad(&grads).unwrap().into_data().try_into_vec().unwrap();
        let eval = |a: &[f32], b: &[f32]| -> f64 {
            let (lin, _, _) = build(a, b, false);
            let l = probe_loss(
                &lin,
                tensor3(&x, d_in, &device),
                tensor3(&probe, d_out, &device),
                &mix,
            );
            f64::from(l.into_scalar::<f32>())
        };
        let h = 1e-2f32;
        for (which, analytic) in [(0, &ga), (1, &gb)] {
            for i in 0..analytic.len() {
                let (mut ap, mut am, mut bp, mut bm) =
                    (a0.clone(), a0.clone(), b0.clone(), b0.clone());
                if which == 0 {
                    ap[i] += h;
                    am[i] -= h;
                } else {
                    bp[i] += h;
                    bm[i] -= h;
                }
                let numeric = (eval(&ap, &bp) - eval(&am, &bm)) / (2.0 * f64::from(h));
                let diff = (numeric - f64::from(analytic[i])).abs();
                assert!(
                    diff < 2e-3 * (1.0 + numeric.abs()),
                    "{mix:?} factor {which} index {i}: numeric {numeric} vs autodiff {}",
                    analytic[i]
                );
            }
        }
    }
}

fn resumable_config() -> TrainConfig {
    TrainConfig::new(LoraTrainConfig::new().with_r(4).with_dropout(0.1))
        .with_max_steps(Some(6))
        .with_batch_size(2)
        .with_grad_accum_steps(2)
        .with_lr(5e-3)
        .with_checkpoint_every(2)
}

#[test]
fn resuming_after_a_crash_equals_an_uninterrupted_run() {
    let model = tiny();
    let data: Vec<TrainExample> = mapping().into_iter().cycle().take(12).collect();
    let full_dir = tempfile::tempdir().unwrap();
    let full = LoraTrainer::new(&model, resumable_config())
        .with_format(PromptFormat::raw())
        .with_checkpoints(full_dir.path(), false)
        .fit(&data, &[])
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let crashed = catch_unwind(AssertUnwindSafe(|| {
        LoraTrainer::new(&model, resumable_config())
            .with_format(PromptFormat::raw())
            .with_checkpoints(dir.path(), true)
            .with_observer(|log| {
                if log.step == 5 {
                    panic!("simulated crash after step 5 (checkpoint of step 4 on disk)");
                }
            })
            .fit(&data, &[])
    }));
    assert!(crashed.is_err());
    let resumed = LoraTrainer::new(&model, resumable_config())
        .with_format(PromptFormat::raw())
        .with_checkpoints(dir.path(), true)
        .fit(&data, &[])
        .unwrap();
    assert_eq!(resumed.report.resumed_from, 4);
    assert_eq!(resumed.report.losses, full.report.losses);
    assert_eq!(resumed.weights.values, full.weights.values);

    let other = resumable_config().with_lr(1e-3);
    let err = LoraTrainer::new(&model, other)
        .with_format(PromptFormat::raw())
        .with_checkpoints(dir.path(), true)
        .fit(&data, &[])
        .unwrap_err();
    assert!(matches!(err, LmError::Checkpoint { .. }), "{err}");
}

#[test]
fn a_diverging_run_stops_with_the_step_and_keeps_the_last_good_checkpoint() {
    let model = tiny();
    let data = mapping();
    let dir = tempfile::tempdir().unwrap();
    let config = TrainConfig::new(all_targets())
        .with_max_steps(Some(20))
        .with_lr(1e30)
        .with_warmup_ratio(0.0)
        .with_max_grad_norm(None)
        .with_checkpoint_every(1);
    let err = LoraTrainer::new(&model, config)
        .with_format(PromptFormat::raw())
        .with_checkpoints(dir.path(), false)
        .fit(&data, &[])
        .unwrap_err();
    let LmError::NonFiniteLoss {
        step,
        last_checkpoint,
        ..
    } = err
    else {
        panic!("expected NonFiniteLoss, got {err}");
    };
    assert!(step >= 2, "the first step starts from finite weights");
    let ck = last_checkpoint.expect("a checkpoint was written before the failure");
    let restored = lm_core::train::checkpoint::load(&ck).unwrap();
    assert_eq!(restored.meta.step, step - 1);
    assert!(restored.meta.losses.iter().all(|l| l.is_finite()));
}

#[test]
fn empty_or_unusable_data_is_a_clear_error() {
    let model = tiny();
    let config = TrainConfig::new(LoraTrainConfig::new()).with_max_len(8);
    let err = LoraTrainer::new(&model, config.clone())
        .with_format(PromptFormat::raw())
        .fit(&[], &[])
        .unwrap_err();
    assert!(
        matches!(err, LmError::EmptyDataset { given: 0, .. }),
        "{err}"
    );
    let long = vec![TrainExample::PromptResponse {
        prompt: "x".repeat(50),
        response: "y".into(),
    }];
    let err = LoraTrainer::new(&model, config)
        .with_format(PromptFormat::raw())
        .fit(&long, &[])
        .unwrap_err();
    assert!(err.to_string().contains("no response"), "{err}");
}

#[test]
fn packing_gives_the_same_loss_as_padding() {
    let model = tiny();
    let mut rng = StdRng::seed_from_u64(3);
    let data: Vec<TrainExample> = (0..7)
        .map(|i| TrainExample::PromptResponse {
            prompt: "p".repeat(1 + i),
            response: (0..(2 + (i * 3) % 5))
                .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
                .collect(),
        })
        .collect();
    let padded = TrainConfig::new(LoraTrainConfig::new()).with_batch_size(3);
    let packed = padded.clone().with_packing(true).with_max_len(24);
    let a = evaluate_loss(&model, None, &data, &padded, &PromptFormat::raw()).unwrap();
    let b = evaluate_loss(&model, None, &data, &packed, &PromptFormat::raw()).unwrap();
    assert!((a - b).abs() < 1e-5, "padded {a} vs packed {b}");
}

#[test]
fn warm_start_continues_from_the_given_weights() {
    let model = tiny_confident();
    let data = mapping();
    let config = TrainConfig::new(all_targets())
        .with_max_steps(Some(20))
        .with_lr(1e-2)
        .with_batch_size(4);
    let first = LoraTrainer::new(&model, config.clone())
        .with_format(PromptFormat::raw())
        .fit(&data, &[])
        .unwrap();
    let trained_loss = evaluate_loss(
        &model,
        Some(&first.weights),
        &data,
        &config,
        &PromptFormat::raw(),
    )
    .unwrap();
    // One batch holds every example and dropout is off, so the first step's loss is the loss of
    // the starting weights.
    let one_step = config.clone().with_max_steps(Some(1));
    let warm = LoraTrainer::new(&model, one_step.clone())
        .with_format(PromptFormat::raw())
        .with_initial_weights(first.weights.clone())
        .fit(&data, &[])
        .unwrap();
    assert!(
        (warm.report.losses[0] - trained_loss).abs() < 1e-4,
        "{} vs {trained_loss}",
        warm.report.losses[0]
    );
    let cold = LoraTrainer::new(&model, one_step)
        .with_format(PromptFormat::raw())
        .fit(&data, &[])
        .unwrap();
    assert!(
        cold.report.losses[0] > trained_loss + 0.5,
        "a fresh start begins at the base loss {} (trained {trained_loss})",
        cold.report.losses[0]
    );

    let mut other_rank = config;
    other_rank.lora = all_targets().with_r(4);
    let err = LoraTrainer::new(&model, other_rank)
        .with_format(PromptFormat::raw())
        .with_initial_weights(first.weights)
        .fit(&data, &[])
        .unwrap_err();
    assert!(matches!(err, LmError::InvalidInput(_)), "{err}");
}
