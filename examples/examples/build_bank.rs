//! Builds the default LoRA bank in `assets/bank/`: trains one SmolLM2-135M-Instruct adapter per
//! task of `assets/datasets/` listed in `BANK_TASKS`, and measures every adapter of the bank
//! (including those trained with the real `peft` library by `scripts/train_peft_bank.py`) against
//! the base model on its own task's held-out set.
//!
//! ```sh
//! cargo run --release -p openexpert-examples --example build_bank            # everything missing
//! cargo run --release -p openexpert-examples --example build_bank -- --only gcd,lcm --force
//! ```
//!
//! Resumable: an adapter whose `card.json` already has its `eval` is skipped (unless `--force`);
//! training checkpoints live in `$OPENEXPERT_HOME/bank-checkpoints/<task>-<steps>steps/`, so a crash resumes the
//! run it interrupted. The held-out evaluation follows `assets/datasets/README.md`: greedy
//! decoding of the chat-templated question (at most 96 new tokens), scored by kshot-eval's exact
//! match: the default [`AnswerExtractor`](openexpert::kshot_eval::AnswerExtractor) (the text
//! after the last `The answer is `, else the last number for numeric answers, else the last line)
//! and [`answers_match`](openexpert::kshot_eval::answers_match), as `openexpert eval` does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use atomic_fs::write_json;
use openexpert::kshot_eval::{AnswerExtractor, KShotItem, KShotSet, answers_match};
use openexpert::lm_core::chat_template::ChatMessage;
use openexpert::lm_core::generate::{GenerationConfig, generate};
use openexpert::lm_core::model::{ExpertMix, LanguageModel};
use openexpert::lm_core::train::{LoraTrainConfig, LoraTrainer, TrainConfig};
use openexpert::lora_zoo::{LoraAdapter, adapter_from_trained};
use openexpert::training_data::read_training_jsonl;
use serde_json::{Value, json};

/// Tasks trained by openexpert: (task, family, description). `word_sequence_reversal` is trained
/// with the real `peft` instead (scripts/train_peft_bank.py), with `chain_sum`.
const BANK_TASKS: &[(&str, &str, &str)] = &[
    (
        "basic_arithmetic",
        "arithmetic",
        "Expressions with +, -, * and parentheses on 1-2 digit integers, with the evaluation steps.",
    ),
    (
        "letter_counting",
        "string",
        "Count how often a letter occurs in a short text, listing the words that contain it.",
    ),
    (
        "word_sorting",
        "ordering",
        "Sort 3-5 words in ascending or descending ASCII order.",
    ),
    (
        "family_relationships",
        "logic",
        "Name the relation between two people of a small described family.",
    ),
    (
        "gcd",
        "number_theory",
        "Greatest common divisor of two integers up to 60, by the Euclidean algorithm.",
    ),
    (
        "lcm",
        "number_theory",
        "Least common multiple of two integers up to 30, via their gcd.",
    ),
    (
        "syllogism",
        "logic",
        "Decide whether a conclusion follows from two premises (Yes/No).",
    ),
];

const BASE_MODEL: &str = "smollm2-135m-instruct";
const MAX_NEW_TOKENS: usize = 96;

struct Options {
    only: Option<Vec<String>>,
    force: bool,
    steps: usize,
    eval_items: usize,
}

fn parse_args() -> anyhow::Result<Options> {
    let mut o = Options {
        only: None,
        force: false,
        steps: 60,
        eval_items: 100,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--only" => {
                o.only = Some(
                    args.next()
                        .context("--only needs a comma-separated task list")?
                        .split(',')
                        .map(str::to_string)
                        .collect(),
                )
            }
            "--force" => o.force = true,
            "--steps" => o.steps = args.next().context("--steps needs a number")?.parse()?,
            "--eval-items" => {
                o.eval_items = args
                    .next()
                    .context("--eval-items needs a number")?
                    .parse()?
            }
            other => bail!(
                "unknown argument {other}; expected --only T1,T2 --force --steps N --eval-items N"
            ),
        }
    }
    Ok(o)
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("examples/ is inside the workspace")
        .to_path_buf()
}

fn read_items(path: &Path, limit: usize) -> anyhow::Result<Vec<KShotItem>> {
    let mut set = KShotSet::from_jsonl(path)?;
    set.items.truncate(limit);
    Ok(set.items)
}

/// Exact-match accuracy of greedy answers on `items`.
fn accuracy(
    model: &LanguageModel,
    mix: &ExpertMix,
    items: &[KShotItem],
    what: &str,
) -> anyhow::Result<(usize, usize)> {
    let config = GenerationConfig {
        max_new_tokens: MAX_NEW_TOKENS,
        ..Default::default()
    };
    let extractor = AnswerExtractor::default();
    let mut correct = 0;
    let started = Instant::now();
    for chunk in items.chunks(16) {
        let prompts = chunk
            .iter()
            .map(|it| {
                let text = model.render_chat(&[ChatMessage::user(it.question.clone())], true)?;
                model.encode(&text)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outs = generate(model, &prompts, &config, mix)?;
        for (it, out) in chunk.iter().zip(outs) {
            let predicted = extractor.extract(&out.text, &it.answer).answer;
            if predicted.is_some_and(|p| answers_match(&p, &it.answer)) {
                correct += 1;
            }
        }
    }
    eprintln!(
        "  {what}: {correct}/{} correct ({:.1} s)",
        items.len(),
        started.elapsed().as_secs_f64()
    );
    Ok((correct, items.len()))
}

fn read_json(path: &Path) -> anyhow::Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    Ok(Some(serde_json::from_str(&std::fs::read_to_string(path)?)?))
}

/// Base-model accuracy per task, cached in `assets/bank/base_eval.json`.
fn base_accuracy(
    model: &mut LanguageModel,
    task: &str,
    items: &[KShotItem],
    cache_path: &Path,
) -> anyhow::Result<f64> {
    let mut cache: BTreeMap<String, Value> = read_json(cache_path)?
        .map(serde_json::from_value)
        .transpose()?
        .unwrap_or_default();
    if let Some(v) = cache.get(task)
        && v["items"].as_u64() == Some(items.len() as u64)
    {
        return Ok(v["accuracy"].as_f64().unwrap_or(0.0));
    }
    openexpert::lora_zoo::apply::detach_all(&mut model.decoder);
    let (c, n) = accuracy(model, &ExpertMix::Base, items, "base")?;
    let acc = c as f64 / n as f64;
    cache.insert(
        task.to_string(),
        json!({"items": n, "correct": c, "accuracy": acc}),
    );
    write_json(cache_path, &cache)?;
    Ok(acc)
}

fn evaluate_adapter(
    model: &mut LanguageModel,
    adapter_dir: &Path,
    items: &[KShotItem],
) -> anyhow::Result<(usize, usize)> {
    let adapter = LoraAdapter::load(adapter_dir)?;
    openexpert::lora_zoo::apply::attach_adapters(&mut model.decoder, &[&adapter])?;
    let r = accuracy(model, &ExpertMix::Static(vec![1.0]), items, "adapter");
    openexpert::lora_zoo::apply::detach_all(&mut model.decoder);
    r
}

fn main() -> anyhow::Result<()> {
    let opts = parse_args()?;
    let root = root();
    let bank = root.join("assets/bank");
    let datasets = root.join("assets/datasets");
    std::fs::create_dir_all(&bank)?;
    let device = openexpert::lm_core::device::device_from_name("cpu")?;
    let mut model = LanguageModel::load(BASE_MODEL, &device)?;
    let base_cache = bank.join("base_eval.json");
    let wanted = |t: &str| opts.only.as_ref().is_none_or(|o| o.iter().any(|x| x == t));

    for &(task, family, description) in BANK_TASKS.iter().filter(|(t, _, _)| wanted(t)) {
        let dir = bank.join(task);
        let card_path = dir.join("card.json");
        if !opts.force && read_json(&card_path)?.is_some_and(|c| !c["eval"].is_null()) {
            eprintln!("{task}: already built, skipping (use --force to rebuild)");
            continue;
        }
        eprintln!("{task}: training");
        let train_file = datasets.join(task).join("train.jsonl");
        let eval_file = datasets.join(task).join("eval.jsonl");
        let train = read_training_jsonl(&train_file)?;
        let heldout = read_training_jsonl(&eval_file)?;
        let lora = LoraTrainConfig::new()
            .with_r(8)
            .with_alpha(16.0)
            .with_dropout(0.05)
            .with_target_modules(vec!["q_proj".into(), "v_proj".into()]);
        let config = TrainConfig::new(lora)
            .with_max_steps(Some(opts.steps))
            .with_batch_size(8)
            .with_lr(2e-3)
            .with_warmup_ratio(0.1)
            .with_max_len(256)
            .with_seed(0)
            .with_checkpoint_every(10);
        // One checkpoint directory per (task, steps): a re-run with other --steps starts fresh
        // instead of hitting the trainer's config check, and an interrupted run resumes.
        let checkpoints = openexpert::lm_core::assets::openexpert_home()
            .join("bank-checkpoints")
            .join(format!("{task}-{}steps", opts.steps));
        let outcome = LoraTrainer::new(&model, config.clone())
            .with_checkpoints(&checkpoints, true)
            .with_progress(true)
            .fit(&train, &heldout[..heldout.len().min(32)])?;
        let adapter = adapter_from_trained(
            &outcome.weights,
            Some("HuggingFaceTB/SmolLM2-135M-Instruct"),
        )?;
        let staged = atomic_fs::StagedDir::replacing(&dir)?;
        adapter.save(staged.path())?;
        let r = &outcome.report;
        let mut card = json!({
            "name": task,
            "task": task,
            "family": family,
            "description": description,
            "base_model": BASE_MODEL,
            "data": {
                "source": format!("reasoning-gym==0.1.25 {task} (see assets/datasets/README.md)"),
                "licence": "Apache-2.0",
                "train_file": format!("assets/datasets/{task}/train.jsonl"),
                "train_examples": r.train_data.kept,
                "eval_file": format!("assets/datasets/{task}/eval.jsonl"),
                "eval_examples": heldout.len(),
            },
            "training": {
                "trained_by": format!("openexpert {} (examples/build_bank.rs)", env!("CARGO_PKG_VERSION")),
                "r": 8, "lora_alpha": 16, "lora_dropout": 0.05,
                "target_modules": ["q_proj", "v_proj"],
                "steps": r.steps, "batch_size": config.batch_size,
                "epochs": r.steps as f64 * config.batch_size as f64 / r.train_data.kept as f64,
                "lr": config.lr, "seed": config.seed, "max_len": config.max_len,
                "optimizer": "AdamW (weight_decay 0, grad-norm clip 1.0)",
                "schedule": "linear warm-up 10%, cosine to 0",
                "final_train_loss": r.final_train_loss,
                "final_eval_loss": r.eval_losses.last().map(|(_, l)| *l),
                "base_eval_loss": r.base_eval_loss,
                "eval_loss_items": heldout.len().min(32),
                "train_seconds": r.seconds,
                "tokens_per_second": r.tokens_per_second,
            },
            "eval": null,
        });
        write_json(&staged.path().join("card.json"), &card)?;
        staged.commit()?;
        fill_eval(
            &mut model,
            &dir,
            &mut card,
            &datasets,
            &base_cache,
            opts.eval_items,
        )?;
    }

    // Adapters trained elsewhere (the real peft) are measured the same way.
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&bank)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("card.json").is_file())
        .collect();
    entries.sort();
    for dir in &entries {
        let Some(mut card) = read_json(&dir.join("card.json"))? else {
            continue; // removed while this run was going on
        };
        let task = card["task"].as_str().unwrap_or_default().to_string();
        if !wanted(&task) || (!card["eval"].is_null() && !opts.force) {
            continue;
        }
        eprintln!("{}: evaluating", dir.display());
        fill_eval(
            &mut model,
            dir,
            &mut card,
            &datasets,
            &base_cache,
            opts.eval_items,
        )?;
    }
    write_readme(&bank, &entries)?;
    Ok(())
}

fn fill_eval(
    model: &mut LanguageModel,
    dir: &Path,
    card: &mut Value,
    datasets: &Path,
    base_cache: &Path,
    eval_items: usize,
) -> anyhow::Result<()> {
    let task = card["task"]
        .as_str()
        .context("card.json needs a task")?
        .to_string();
    let items = read_items(&datasets.join(&task).join("eval.jsonl"), eval_items)?;
    let base = base_accuracy(model, &task, &items, base_cache)?;
    let (c, n) = evaluate_adapter(model, dir, &items)?;
    card["eval"] = json!({
        "metric": "exact_match",
        "how": "greedy, at most 96 new tokens, prediction after the last 'The answer is ' (fallback: last number / last line), see assets/datasets/README.md",
        "items": n,
        "base_accuracy": base,
        "adapter_accuracy": c as f64 / n as f64,
        "adapter_correct": c,
        "evaluated_by": "openexpert examples/build_bank.rs",
    });
    write_json(&dir.join("card.json"), card)?;
    Ok(())
}

fn write_readme(bank: &Path, entries: &[PathBuf]) -> anyhow::Result<()> {
    let mut rows = String::new();
    for dir in entries {
        let Some(card) = read_json(&dir.join("card.json"))? else {
            continue;
        };
        let e = &card["eval"];
        let pct = |v: &Value| {
            v.as_f64()
                .map_or("-".to_string(), |x| format!("{:.0}%", 100.0 * x))
        };
        rows.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} | {} |\n",
            dir.file_name().unwrap_or_default().to_string_lossy(),
            card["task"].as_str().unwrap_or("?"),
            card["family"].as_str().unwrap_or("?"),
            card["training"]["trained_by"]
                .as_str()
                .unwrap_or("?")
                .split(" (")
                .next()
                .unwrap_or("?"),
            pct(&e["base_accuracy"]),
            pct(&e["adapter_accuracy"]),
            e["items"].as_u64().map_or("-".into(), |n| n.to_string()),
        ));
    }
    let text = format!(
        "# The default LoRA bank\n\n\
LoRA adapters (r = 8, alpha = 16, q_proj + v_proj) for SmolLM2-135M-Instruct, one per task of\n\
`assets/datasets/` (reasoning-gym generators, Apache-2.0), grouped in families so that a K-shot target\n\
task finds related and unrelated experts. Each directory is a PEFT adapter (`adapter_config.json`,\n\
`adapter_model.safetensors`) with a `card.json` (data, training, held-out accuracy).\n\n\
Built by `cargo run --release -p openexpert-examples --example build_bank` (openexpert's trainer; about\n\
5-10 minutes per adapter on 2 CPU cores, resumable) and `scripts/train_peft_bank.py` (the `-peft` adapters,\n\
trained with the real `peft` library). Accuracies: greedy exact match on the first items of each task's\n\
`eval.jsonl`, measured by `build_bank` for every adapter the same way (base = the model without adapter;\n\
`base_eval.json` caches it).\n\n\
| adapter | task | family | trained by | base accuracy | adapter accuracy | items |\n\
|---|---|---|---|---|---|---|\n{rows}"
    );
    std::fs::write(bank.join("README.md"), text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bank's accuracy is kshot-eval's exact match on the dataset convention.
    fn correct(text: &str, gold: &str) -> bool {
        AnswerExtractor::default()
            .extract(text, gold)
            .answer
            .is_some_and(|p| answers_match(&p, gold))
    }

    #[test]
    fn extraction_follows_the_dataset_convention() {
        assert!(correct("12 + 3 = 15\nThe answer is 15.", "15"));
        assert!(correct("so it is 42", "42"));
        assert!(correct("it is -7.", "-7"));
        assert!(correct("blue red\n", "blue red"));
        assert!(!correct("blue red\n", "red blue"));
        assert!(!correct("nothing", "3"));
        assert!(!correct("The answer is 14.", "15"));
    }
}
