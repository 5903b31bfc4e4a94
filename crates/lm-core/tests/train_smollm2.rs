//! LoRA training on the real SmolLM2-135M-Instruct lowers the held-out loss of a small task.

mod common;

use common::{asset_dir, test_device};
use lm_core::model::LanguageModel;
use lm_core::train::{LoraTrainConfig, LoraTrainer, TrainConfig, TrainExample};

/// "Reverse the words" prompts with their answers, deterministic.
fn task(range: std::ops::Range<usize>) -> Vec<TrainExample> {
    const WORDS: [&str; 12] = [
        "red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "river", "stone", "bird",
        "fish",
    ];
    range
        .map(|i| {
            let w: Vec<&str> = (0..3)
                .map(|k| WORDS[(i * 5 + k * 7 + i / 3) % 12])
                .collect();
            let mut rev = w.clone();
            rev.reverse();
            TrainExample::PromptResponse {
                prompt: format!("Reverse the order of these words: {}", w.join(" ")),
                response: format!("The answer is {}.", rev.join(" ")),
            }
        })
        .collect()
}

#[test]
fn lora_training_lowers_the_held_out_loss_of_smollm2() {
    let dir = asset_dir(lm_core::assets::DEFAULT_MODEL);
    let model =
        LanguageModel::from_gguf(&dir.join("SmolLM2-135M-Instruct.Q4_1.gguf"), &test_device())
            .unwrap();
    let train = task(0..24);
    let eval = task(100..108);
    let config = TrainConfig::new(LoraTrainConfig::new().with_r(8).with_alpha(16.0))
        .with_max_steps(Some(6))
        .with_batch_size(4)
        .with_lr(3e-3)
        .with_warmup_ratio(0.0);
    let out = LoraTrainer::new(&model, config)
        .fit(&train, &eval)
        .expect("training runs");
    let base = out.report.base_eval_loss.expect("held-out set given");
    let (_, after) = *out.report.eval_losses.last().unwrap();
    eprintln!(
        "held-out loss {base:.4} -> {after:.4}; {:.0} tokens/s",
        out.report.tokens_per_second
    );
    assert!(after < 0.8 * base, "held-out loss {base} -> {after}");
    assert_eq!(
        out.report.trainable_params,
        30 * (576 * 8 + 8 * 576 + 576 * 8 + 8 * 192)
    );
}
