//! Where the time of one LoRA training step goes on SmolLM2 (batch 4 x 128, LoRA r=8 on q,v):
//! forward on the plain device, forward on the autodiff device, backward, and the loss head.
//!
//! `cargo run --release -p lm-core --example train_timing`

use std::time::Instant;

use lm_core::model::LanguageModel;
use lm_core::train::data::{TokenizedExample, make_batches};
use lm_core::train::trainer::loss_sum_of;
use lm_core::train::{LoraTrainConfig, LoraWeights};

fn main() -> lm_core::Result<()> {
    let device = lm_core::device::device_from_name("cpu")?;
    let model = LanguageModel::load(lm_core::assets::DEFAULT_MODEL, &device)?;
    let vocab = model.config().vocab_size as u64;
    let examples: Vec<TokenizedExample> = (0..4)
        .map(|b| {
            let ids: Vec<u32> = (0..128)
                .map(|t| (((b * 128 + t) as u64 * 7919 + 13) % vocab) as u32)
                .collect();
            let mut target = vec![true; 128];
            target[0] = false;
            TokenizedExample {
                index: b,
                ids,
                target,
            }
        })
        .collect();
    let batch = make_batches(&examples, 4, 128, false, 0, None).remove(0);
    let cfg = LoraTrainConfig::new().with_dropout(0.0);
    let weights = LoraWeights::init(&model.decoder, &cfg, 0)?;
    let mut plain = model.decoder.clone();
    weights.attach(&mut plain, &device);
    let adev = device.clone().autodiff();
    use lm_core::burn::module::Module;
    let mut train = model.decoder.clone().to_device(&adev).no_grad();
    for rep in 0..3 {
        let t = Instant::now();
        let v = loss_sum_of(&plain, &batch, &device).into_scalar::<f32>();
        let plain_fwd = t.elapsed().as_secs_f64();
        let leaves = weights.attach_for_training(&mut train, &adev, 0);
        let t = Instant::now();
        let loss = loss_sum_of(&train, &batch, &adev);
        let _ = loss.clone().into_scalar::<f32>();
        let ad_fwd = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let grads = loss.backward();
        let g = lm_core::train::gather_grads(&leaves, &grads);
        let bwd = t.elapsed().as_secs_f64();
        eprintln!(
            "rep {rep}: loss {v:.3}; plain forward {plain_fwd:.3} s, autodiff forward {ad_fwd:.3} s, backward {bwd:.3} s (|g| {})",
            g.iter().map(|x| x * x).sum::<f32>().sqrt()
        );
    }
    Ok(())
}
