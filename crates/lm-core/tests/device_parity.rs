//! Device parity: the same computation on the test device (`OPENEXPERT_TEST_DEVICE`: `cuda`,
//! `wgpu`; `cpu` by default) and on the CPU backend, compared within the device's tolerance
//! (`lm_core::testing::Tolerance`). Tiny random models, no assets: forward logits (Llama and
//! Gemma 3 layouts), scoring, greedy generation, LoRA experts (static and per-row mixes), learned
//! routing (MoE), and LoRA training steps. Every comparison prints a `parity:` line with its
//! measured deviation, which `scripts/gpu-parity.sh` collects.
//!
//! On the CPU this compares the CPU with itself (a determinism check); its purpose is the run on
//! a GPU: `OPENEXPERT_TEST_DEVICE=cuda cargo test --release -p lm-core --features cuda --test
//! device_parity`.

use burn::tensor::{Int, Tensor, TensorData};
use lm_core::generate::{GenerationConfig, generate};
use lm_core::model::adapted_linear::{Router, linear_from_torch};
use lm_core::model::{ExpertMix, ExpertSet, HostFactors, LanguageModel, attach_expert_sets};
use lm_core::score::{ScoreOptions, ScoreRequest, score};
use lm_core::testing::{
    assert_close, assert_close_rel, cpu_device, test_device, test_device_name, test_tolerance,
    tiny_gemma3_language_model, tiny_language_model,
};
use lm_core::train::{
    LoraTrainConfig, LoraTrainer, LoraWeights, PromptFormat, TrainConfig, evaluate_loss,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type Builder = fn(u64, &burn::tensor::Device) -> LanguageModel;

/// The same random model on the CPU and on the test device.
fn pair(build: Builder, seed: u64) -> (LanguageModel, LanguageModel) {
    (build(seed, &cpu_device()), build(seed, &test_device()))
}

fn ids(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(1..256)).collect()
}

fn logits(m: &LanguageModel, rows: &[Vec<u32>], mix: &ExpertMix) -> Vec<f32> {
    let len = rows[0].len();
    let flat: Vec<i64> = rows.iter().flatten().map(|&t| t as i64).collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(flat, [rows.len(), len]), &m.device);
    m.decoder
        .forward(tokens, mix)
        .into_data()
        .try_into_vec::<f32>()
        .expect("f32 logits")
}

fn batch(rows: usize, len: usize, seed: u64) -> Vec<Vec<u32>> {
    (0..rows).map(|r| ids(len, seed + r as u64)).collect()
}

#[test]
fn forward_logits_match_the_cpu() {
    let tol = test_tolerance().layer;
    let rows = batch(3, 17, 100);
    for (name, build) in [
        ("llama", tiny_language_model as Builder),
        ("gemma3", tiny_gemma3_language_model as Builder),
    ] {
        let (cpu, dev) = pair(build, 5);
        assert_close(
            &format!("forward: tiny {name} logits [3, 17, 256]"),
            &logits(&dev, &rows, &ExpertMix::Base),
            &logits(&cpu, &rows, &ExpertMix::Base),
            tol,
        );
    }
}

#[test]
fn scoring_matches_the_cpu() {
    let (cpu, dev) = pair(tiny_language_model, 7);
    let requests: Vec<ScoreRequest> = (0..6)
        .map(|i| ScoreRequest {
            prompt: ids(3 + 2 * i, 200 + i as u64),
            target: ids(2 + i, 300 + i as u64),
        })
        .collect();
    let options = ScoreOptions {
        batch_size: 4,
        keep_last_logits: true,
        ..Default::default()
    };
    let a = score(&cpu, &requests, &options, &ExpertMix::Base).unwrap();
    let b = score(&dev, &requests, &options, &ExpertMix::Base).unwrap();
    let tol = test_tolerance().layer;
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_close(
            &format!("score: token log-probs of request {i} (padded batch of 4)"),
            &y.token_logprobs,
            &x.token_logprobs,
            tol,
        );
        assert_close(
            &format!("score: last-position logits of request {i}"),
            y.last_logits.as_ref().unwrap(),
            x.last_logits.as_ref().unwrap(),
            tol,
        );
    }
}

/// Greedy decoding (batched, left-padded, KV cache) must pick the CPU's tokens, except where
/// the CPU's top two logits are closer than twice the tolerance (a near tie either may break).
#[test]
fn greedy_generation_matches_the_cpu_up_to_near_ties() {
    let (cpu, dev) = pair(tiny_language_model, 9);
    let prompts: Vec<Vec<u32>> = (0..4).map(|i| ids(3 + 3 * i, 400 + i as u64)).collect();
    let config = GenerationConfig {
        max_new_tokens: 12,
        stop_at_eos: false,
        ..Default::default()
    };
    let want = generate(&cpu, &prompts, &config, &ExpertMix::Base).unwrap();
    let got = generate(&dev, &prompts, &config, &ExpertMix::Base).unwrap();
    let tol = test_tolerance().layer;
    let mut compared = 0;
    for (row, (g, w)) in got.iter().zip(&want).enumerate() {
        let Some(k) = g
            .token_ids
            .iter()
            .zip(&w.token_ids)
            .position(|(a, b)| a != b)
        else {
            assert_eq!(g.token_ids.len(), w.token_ids.len(), "generate: row {row}");
            compared += w.token_ids.len();
            continue;
        };
        compared += k;
        // The CPU's logits after the shared prefix: the two choices must be a near tie.
        let mut seq = prompts[row].clone();
        seq.extend_from_slice(&w.token_ids[..k]);
        let all = logits(&cpu, std::slice::from_ref(&seq), &ExpertMix::Base);
        let last = &all[all.len() - 256..];
        let (dev_tok, cpu_tok) = (g.token_ids[k] as usize, w.token_ids[k] as usize);
        let gap = last[cpu_tok] - last[dev_tok];
        assert!(
            gap <= 2.0 * tol,
            "generate: row {row} step {k} on `{}`: picked token {dev_tok}, the CPU picked {cpu_tok}; the CPU's logits differ by {gap:e} there (> 2 x tolerance {tol:e}): not a near tie",
            test_device_name()
        );
    }
    eprintln!(
        "parity: device={} compared_steps={compared} op=generate (tiny llama, greedy, 4 rows)",
        test_device_name()
    );
    assert!(compared >= 12, "generate: only {compared} steps agreed");
}

/// Three random rank-4 experts on every adaptable linear (with a learned router when
/// `routed`), identical on both devices.
fn attach_experts(m: &mut LanguageModel, routed: bool) {
    let device = m.device.clone();
    let layers: Vec<(String, usize, usize)> = m
        .decoder
        .adapted_linears()
        .into_iter()
        .map(|(name, lin)| {
            let [d_in, d_out] = lin.base.weight.val().dims();
            (name, d_in, d_out)
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(77);
    let mut rand = |n: usize, s: f32| -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-s..s)).collect::<Vec<_>>()
    };
    let (experts, rank) = (3, 4);
    let mut sets = Vec::new();
    for (name, d_in, d_out) in layers {
        let factors: Vec<HostFactors> = (0..experts)
            .map(|e| HostFactors {
                a: rand(d_in * rank, 0.3),
                b: rand(rank * d_out, 0.3),
                rank,
                scale: 0.5 + e as f32,
            })
            .collect();
        let refs: Vec<Option<&HostFactors>> = factors.iter().map(Some).collect();
        let mut set = ExpertSet::from_host(&name, d_in, d_out, &refs, &device).unwrap();
        if routed {
            let w = rand(experts * d_in, 1.0);
            set.router = Some(Router::from(linear_from_torch(
                &w, experts, d_in, None, &device,
            )));
        }
        sets.push((name, set));
    }
    attach_expert_sets(&mut m.decoder, sets).unwrap();
}

#[test]
fn lora_expert_mixes_match_the_cpu() {
    let (mut cpu, mut dev) = pair(tiny_language_model, 13);
    attach_experts(&mut cpu, false);
    attach_experts(&mut dev, false);
    let rows = batch(4, 11, 500);
    let tol = test_tolerance().layer;
    for (what, mix) in [
        (
            "static mix of 3 experts",
            ExpertMix::Static(vec![0.7, -0.3, 0.5]),
        ),
        (
            "one expert per row",
            ExpertMix::PerRow(vec![Some(2), None, Some(0), Some(1)]),
        ),
    ] {
        assert_close(
            &format!("LoRA apply: {what}, tiny llama logits"),
            &logits(&dev, &rows, &mix),
            &logits(&cpu, &rows, &mix),
            tol,
        );
    }
}

#[test]
fn moe_routing_matches_the_cpu() {
    let (mut cpu, mut dev) = pair(tiny_language_model, 17);
    attach_experts(&mut cpu, true);
    attach_experts(&mut dev, true);
    let rows = batch(2, 13, 600);
    let tol = test_tolerance().layer;
    for top_k in [None, Some(1), Some(2)] {
        let mix = ExpertMix::Routed { top_k };
        assert_close(
            &format!("MoE routing: learned routers, top_k {top_k:?}, tiny llama logits"),
            &logits(&dev, &rows, &mix),
            &logits(&cpu, &rows, &mix),
            tol,
        );
    }
}

#[test]
fn lora_training_steps_match_the_cpu() {
    let data = lm_core::testing::animal_sounds(3);
    let lora = LoraTrainConfig::new()
        .with_r(4)
        .with_alpha(8.0)
        .with_dropout(0.0)
        .with_target_modules(["q_proj", "v_proj", "down_proj"].map(String::from).to_vec());
    let config = TrainConfig::new(lora)
        .with_max_steps(Some(3))
        .with_lr(1e-2)
        .with_batch_size(3);
    let (cpu, dev) = pair(tiny_language_model, 21);
    let train = |m: &LanguageModel| {
        LoraTrainer::new(m, config.clone())
            .with_format(PromptFormat::raw())
            .with_progress(false)
            .fit(&data, &[])
            .unwrap()
    };
    let want = train(&cpu);
    let got = train(&dev);
    let tol = test_tolerance();
    assert_eq!(got.report.losses.len(), 3, "train: steps run");
    for (step, (g, w)) in got
        .report
        .losses
        .iter()
        .zip(&want.report.losses)
        .enumerate()
    {
        assert_close_rel(
            &format!("train: loss of step {}", step + 1),
            *g,
            *w,
            tol.relative as f64,
        );
    }
    // The factors themselves are not compared element by element: AdamW's first steps move
    // each by about lr x sign(gradient), so a gradient element near zero may flip within the
    // tolerance. What they compute is compared instead: the loss of both trained adapters,
    // evaluated on the CPU.
    let on_cpu = |w: &LoraWeights| {
        evaluate_loss(&cpu, Some(w), &data, &config, &PromptFormat::raw()).unwrap()
    };
    assert_close_rel(
        "train: loss of the adapter trained on the device vs on the CPU (evaluated on the CPU)",
        on_cpu(&got.weights),
        on_cpu(&want.weights),
        tol.relative as f64,
    );
}
