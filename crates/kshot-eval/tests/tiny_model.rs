//! End-to-end checks on a tiny random model (byte tokenizer, 2 layers): batch-size independence,
//! packed bank rows equal separate evaluations, bad input is refused, unextractable answers are
//! counted, and chat-format targets end with the template's end of turn.

use kshot_eval::eval::{EvalConfig, Experts, Metrics, evaluate};
use kshot_eval::extract::{AnswerExtractor, Extractor};
use kshot_eval::{
    KShotItem, KShotPrompt, KshotError, PromptFormat, evaluate_adapters, exact_match,
    multiple_choice,
};
use lm_core::model::{ExpertMix, LanguageModel};
use lm_core::testing::tiny_language_model;
use lora_zoo::adapter::{LoraAdapter, LoraModule};
use lora_zoo::config::AdapterConfig;
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn model() -> LanguageModel {
    let device = lm_core::device::device_from_name("cpu").unwrap();
    tiny_language_model(7, &device)
}

fn items() -> Vec<KShotItem> {
    (0..5)
        .map(|i| {
            KShotItem::new(format!("{i}+{}?", i * 3), (i * 4).to_string())
                .with_rationale(format!("{i} and {} make {}", i * 3, i * 4))
                .with_choices(vec![(i * 4).to_string(), format!("{}0", i + 1), "x".into()])
                .with_id(format!("q{i}"))
        })
        .collect()
}

fn config(batch_size: usize) -> EvalConfig {
    EvalConfig {
        format: PromptFormat::Plain {
            doc_to_text: "Q: {question}\nA:".into(),
            target_delimiter: " ".into(),
            fewshot_delimiter: "\n\n".into(),
        },
        extractor: AnswerExtractor::new(vec![Extractor::AnswerIs, Extractor::LastLine]).unwrap(),
        max_new_tokens: 6,
        stop: Some(vec![]),
        batch_size,
        bootstrap_resamples: 200,
        ..Default::default()
    }
}

fn all_metrics() -> Metrics {
    Metrics {
        exact_match: true,
        reasoning_ppl: true,
        answer_ppl: true,
        multiple_choice: true,
    }
}

fn random_adapter(seed: u64, m: &LanguageModel) -> LoraAdapter {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut modules = std::collections::BTreeMap::new();
    for layer in 0..m.config().num_layers {
        for (name, d_out) in [
            ("self_attn.q_proj", 32),
            ("self_attn.v_proj", 16),
            ("mlp.down_proj", 32),
        ] {
            let d_in = if name == "mlp.down_proj" { 64 } else { 32 };
            let a = Array2::from_shape_fn((4, d_in), |_| rng.random::<f32>() - 0.5);
            let b = Array2::from_shape_fn((d_out, 4), |_| rng.random::<f32>() - 0.5);
            modules.insert(
                format!("model.layers.{layer}.{name}"),
                LoraModule::new(a, b, 8.0, 2.0).unwrap(),
            );
        }
    }
    let config = lora_zoo::writer::config_for_modules(&modules, &AdapterConfig::default());
    LoraAdapter { config, modules }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-3 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn results_do_not_depend_on_batch_size() {
    let m = model();
    let items = items();
    let runs: Vec<_> = [1, 2, 16]
        .iter()
        .map(|&b| {
            evaluate(
                &m,
                Experts::Shared(&ExpertMix::Base),
                &["base".into()],
                &[],
                &items,
                all_metrics(),
                &config(b),
            )
            .unwrap()
            .remove(0)
        })
        .collect();
    for r in &runs[1..] {
        let (a, b) = (
            runs[0].exact_match.as_ref().unwrap(),
            r.exact_match.as_ref().unwrap(),
        );
        let texts = |x: &kshot_eval::ExactMatchReport| {
            x.per_item
                .iter()
                .map(|p| p.prediction.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(texts(a), texts(b));
        assert_eq!(a.accuracy, b.accuracy);
        let (p, q) = (
            runs[0].reasoning_ppl.as_ref().unwrap(),
            r.reasoning_ppl.as_ref().unwrap(),
        );
        assert!(
            close(p.mean_ppl, q.mean_ppl),
            "{} vs {}",
            p.mean_ppl,
            q.mean_ppl
        );
        assert!(close(p.pooled_ppl, q.pooled_ppl));
        let (c, d) = (
            runs[0].multiple_choice.as_ref().unwrap(),
            r.multiple_choice.as_ref().unwrap(),
        );
        assert_eq!((c.acc, c.acc_norm), (d.acc, d.acc_norm));
    }
    // With exact match, reasoning and answer perplexity are scored on the generation's prefill;
    // alone, by separate scoring passes: the two agree.
    let alone = evaluate(
        &m,
        Experts::Shared(&ExpertMix::Base),
        &["base".into()],
        &[],
        &items,
        Metrics {
            exact_match: false,
            reasoning_ppl: true,
            answer_ppl: true,
            multiple_choice: false,
        },
        &config(2),
    )
    .unwrap()
    .remove(0);
    for (p, q) in [
        (&runs[0].reasoning_ppl, &alone.reasoning_ppl),
        (&runs[0].answer_ppl, &alone.answer_ppl),
    ] {
        let (p, q) = (p.as_ref().unwrap(), q.as_ref().unwrap());
        for (x, y) in p.per_item.iter().zip(&q.per_item) {
            assert_eq!(x.n_tokens, y.n_tokens);
            assert!(close(x.ppl, y.ppl), "{} vs {}", x.ppl, y.ppl);
        }
    }
    // A random model is not fluent: perplexities are large but finite, mean >= pooled is not
    // guaranteed, both are > 1.
    let p = runs[0].reasoning_ppl.as_ref().unwrap();
    assert!(p.mean_ppl.is_finite() && p.mean_ppl > 1.0 && p.pooled_ppl > 1.0);
    assert_eq!(p.per_item.len(), 5);
}

#[test]
fn packed_bank_rows_equal_separate_evaluations() {
    let mut m = model();
    let items = items();
    let adapters: Vec<LoraAdapter> = (0..3).map(|s| random_adapter(s, &m)).collect();
    let refs: Vec<&LoraAdapter> = adapters.iter().collect();
    let names: Vec<String> = (0..3).map(|i| format!("a{i}")).collect();
    let packed = evaluate_adapters(
        &mut m,
        &names,
        &refs,
        true,
        &[],
        &items,
        all_metrics(),
        &config(4),
    )
    .unwrap();
    assert_eq!(packed.evaluations.len(), 4);
    assert_eq!(packed.evaluations[0].name, "base");
    let mut differs_from_base = false;
    for (arm, e) in packed.evaluations.iter().enumerate() {
        let mix = match arm {
            0 => ExpertMix::Base,
            k => {
                let mut c = vec![0.0; 3];
                c[k - 1] = 1.0;
                ExpertMix::Static(c)
            }
        };
        let alone = evaluate(
            &m,
            Experts::Shared(&mix),
            std::slice::from_ref(&e.name),
            &[],
            &items,
            all_metrics(),
            &config(2),
        )
        .unwrap()
        .remove(0);
        let em = |x: &kshot_eval::Evaluation| {
            x.exact_match
                .as_ref()
                .unwrap()
                .per_item
                .iter()
                .map(|p| p.prediction.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(em(e), em(&alone), "arm {arm}");
        for (p, q) in e
            .reasoning_ppl
            .as_ref()
            .unwrap()
            .per_item
            .iter()
            .zip(&alone.reasoning_ppl.as_ref().unwrap().per_item)
        {
            assert!(close(p.ppl, q.ppl), "arm {arm}: {} vs {}", p.ppl, q.ppl);
        }
        if arm > 0 && em(e) != em(&packed.evaluations[0]) {
            differs_from_base = true;
        }
    }
    assert!(differs_from_base, "adapters should change some generation");
}

#[test]
fn bad_input_is_refused_before_model_work() {
    let m = model();
    let cfg = config(4);
    let no_rationale = vec![
        KShotItem::new("q", "1"),
        KShotItem::new("r", "2").with_rationale("x"),
    ];
    let metrics = Metrics {
        exact_match: false,
        reasoning_ppl: true,
        answer_ppl: false,
        multiple_choice: false,
    };
    let e = evaluate(
        &m,
        Experts::Shared(&ExpertMix::Base),
        &["b".into()],
        &[],
        &no_rationale,
        metrics,
        &cfg,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            KshotError::MissingRationale {
                missing: 1,
                total: 2,
                ..
            }
        ),
        "{e}"
    );
    let e = multiple_choice(&m, &ExpertMix::Base, &[], &no_rationale, &cfg).unwrap_err();
    assert!(
        matches!(e, KshotError::MissingChoices { found: 0, .. }),
        "{e}"
    );
    let bad_gold = vec![KShotItem::new("q", "z").with_choices(vec!["a".into(), "b".into()])];
    assert!(matches!(
        multiple_choice(&m, &ExpertMix::Base, &[], &bad_gold, &cfg),
        Err(KshotError::AnswerNotAChoice { .. })
    ));
    assert!(matches!(
        exact_match(&m, &ExpertMix::Base, &[], &[], &cfg),
        Err(KshotError::EmptySet { .. })
    ));
    let per_row = ExpertMix::PerRow(vec![None]);
    assert!(exact_match(&m, &per_row, &[], &no_rationale, &cfg).is_err());
}

#[test]
fn unextractable_answers_count_as_wrong_and_matches_count_as_right() {
    let m = model();
    let items = items();
    // A regex that never matches: every item unextracted, accuracy 0, no error.
    let mut cfg = config(8);
    cfg.extractor = AnswerExtractor::new(vec![Extractor::Regex {
        pattern: "NEVER-THERE".into(),
        group: 0,
        last: true,
    }])
    .unwrap();
    let r = exact_match(&m, &ExpertMix::Base, &[], &items, &cfg).unwrap();
    assert_eq!((r.correct, r.unextracted, r.total), (0, 5, 5));
    assert!(
        r.per_item
            .iter()
            .all(|p| p.extracted.is_none() && !p.correct)
    );
    // Gold answers set to what the model says (last line): every item correct.
    let cfg = config(8);
    let first = exact_match(&m, &ExpertMix::Base, &[], &items, &cfg).unwrap();
    let echoed: Vec<KShotItem> = items
        .iter()
        .zip(&first.per_item)
        .filter_map(|(it, p)| {
            p.extracted.clone().map(|a| KShotItem {
                answer: a,
                ..it.clone()
            })
        })
        .collect();
    assert!(!echoed.is_empty());
    let again = exact_match(&m, &ExpertMix::Base, &[], &echoed, &cfg).unwrap();
    assert_eq!(again.correct, echoed.len());
    assert_eq!(again.accuracy, 1.0);
    assert_eq!(again.stderr, 0.0);
}

#[test]
fn multiple_choice_picks_the_most_likely_choice() {
    let m = model();
    let items = items();
    let cfg = config(3);
    let r = multiple_choice(&m, &ExpertMix::Base, &[], &items, &cfg).unwrap();
    for (it, c) in items.iter().zip(&r.per_item) {
        let choices = it.choices.as_ref().unwrap();
        // Recompute each choice's log-likelihood on its own.
        for (k, choice) in choices.iter().enumerate() {
            let ctx = cfg.format.context(&m, &[], it).unwrap();
            let req = cfg
                .format
                .encode_pair(&m, &ctx, &format!(" {choice}"))
                .unwrap();
            let s =
                lm_core::score::score(&m, &[req], &Default::default(), &ExpertMix::Base).unwrap();
            assert!(close(s[0].logprob, c.loglikelihoods[k]));
        }
        assert_eq!(c.gold, 0);
        let best = (0..choices.len())
            .max_by(|&a, &b| c.loglikelihoods[a].total_cmp(&c.loglikelihoods[b]))
            .unwrap();
        assert_eq!(c.pred, best);
    }
    let acc = r.per_item.iter().filter(|c| c.pred == c.gold).count() as f64 / 5.0;
    assert_eq!(r.acc, acc);
}

#[test]
fn chat_targets_end_with_the_end_of_turn() {
    let mut m = model();
    let chatml = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    m.chat_template = Some(lm_core::chat_template::ChatTemplate::new(chatml, "", "").unwrap());
    let f = PromptFormat::default();
    let shot = KShotItem::new("1+1?", "2").with_rationale("one and one");
    let q = KShotItem::new("2+2?", "4");
    let ctx = f.context(&m, std::slice::from_ref(&shot), &q).unwrap();
    assert_eq!(
        ctx,
        "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\none and one\nThe answer is 2.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    let (c2, cont) = f.pair(&m, &[shot], &q, "The answer is 4.").unwrap();
    assert_eq!(c2, ctx);
    assert_eq!(cont, "The answer is 4.<|im_end|>");
}

#[test]
fn rank_bank_ranks_a_bank_on_disk() {
    use kshot_eval::rank::{RankConfig, rank_bank};
    use kshot_eval::select::SelectionConfig;
    let mut m = model();
    let dir = tempfile::tempdir().unwrap();
    for s in 0..4 {
        random_adapter(s, &m)
            .save(&dir.path().join(format!("ad{s}")))
            .unwrap();
    }
    let bank = lora_zoo::LoraBank::scan(dir.path()).unwrap();
    assert_eq!(bank.names().len(), 4);
    let config = RankConfig {
        eval: config(8),
        selection: SelectionConfig {
            shortlist: 3,
            experts: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    let r = rank_bank(&mut m, &bank, None, &[], &items(), &config).unwrap();
    assert_eq!(r.signals.len(), 5, "base + 4 adapters");
    assert_eq!(r.signals[0].name, "base");
    assert_eq!(r.selection.adapters.len(), 4);
    assert_eq!(
        r.selection
            .adapters
            .iter()
            .filter(|a| a.shortlisted)
            .count(),
        3
    );
    assert_eq!(r.selection.selected.len(), 2);
    assert_eq!(r.selection.tuples_scored, 3);
    // The ranking follows the rule: accuracy descending, then reasoning perplexity ascending.
    for w in r.selection.adapters.windows(2) {
        assert!(
            w[0].accuracy > w[1].accuracy
                || (w[0].accuracy == w[1].accuracy && w[0].ppl <= w[1].ppl)
        );
    }
    // Similarity is the lora-zoo Rocket criterion: self-similarity = number of stored tensors.
    assert!((r.similarity[0][0] - 12.0).abs() < 1e-9);
    let md = kshot_eval::report::rank_markdown(&r);
    assert!(md.contains("Selected experts"), "{md}");
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains("blind_guesser"));
}

/// The tiny model shaped like Llama 3: it adds BOS (`!`, byte id 0) and its chat template
/// writes `{{ bos_token }}` too.
fn bos_writing_model() -> LanguageModel {
    let mut m = model();
    let chatml = "{{ bos_token }}{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    m.chat_template = Some(lm_core::chat_template::ChatTemplate::new(chatml, "!", "").unwrap());
    m.bos_to_add = Some(0);
    assert_eq!(m.encode_continuation("!").unwrap(), vec![0]);
    m
}

#[test]
fn chat_prompts_carry_exactly_one_bos() {
    let m = bos_writing_model();
    let f = PromptFormat::default();
    // No shot: the byte-level tiny model has a context of 128 tokens.
    let shot: [KShotItem; 0] = [];
    let q = KShotItem::new("2+2?", "4").with_choices(vec!["4".into(), "5".into()]);
    let (ctx, cont) = f.pair(&m, &shot, &q, "4").unwrap();
    assert!(ctx.starts_with("!<|im_start|>"), "{ctx}");
    let r = f.encode_pair(&m, &ctx, &cont).unwrap();
    let bos = r
        .prompt
        .iter()
        .chain(&r.target)
        .filter(|&&t| t == 0)
        .count();
    assert_eq!((r.prompt[0], bos), (0, 1), "{:?}", r.prompt);
    // The same sequence the one-BOS rendering gives, split at its context.
    let one_bos = m.encode_chat(&format!("{ctx}{cont}")).unwrap();
    assert_eq!([r.prompt.clone(), r.target.clone()].concat(), one_bos);

    // Evaluation scores exactly that sequence (answer perplexity and multiple choice).
    let cfg = EvalConfig {
        format: f.clone(),
        max_new_tokens: 2,
        bootstrap_resamples: 10,
        ..Default::default()
    };
    let metrics = Metrics {
        exact_match: true,
        reasoning_ppl: false,
        answer_ppl: true,
        multiple_choice: true,
    };
    let ev = evaluate(
        &m,
        Experts::Shared(&ExpertMix::Base),
        &["base".into()],
        &shot,
        std::slice::from_ref(&q),
        metrics,
        &cfg,
    )
    .unwrap();
    let item = &ev[0].answer_ppl.as_ref().unwrap().per_item[0];
    let r_prompt = r.prompt.clone();
    let want = lm_core::score::score(
        &m,
        &[r],
        &lm_core::score::ScoreOptions::default(),
        &ExpertMix::Base,
    )
    .unwrap();
    assert_eq!(item.n_tokens, want[0].n_tokens);
    assert!((item.logprob - want[0].logprob).abs() < 1e-4);
    // A choice is scored bare (no end of turn) after the same one-BOS context.
    let choice = &ev[0].multiple_choice.as_ref().unwrap().per_item[0];
    let bare = f.encode_pair(&m, &ctx, "4").unwrap();
    assert_eq!(bare.prompt, r_prompt);
    let want_choice = lm_core::score::score(
        &m,
        &[bare],
        &lm_core::score::ScoreOptions::default(),
        &ExpertMix::Base,
    )
    .unwrap();
    assert!((choice.loglikelihoods[0] - want_choice[0].logprob).abs() < 1e-4);
    // Exact match generates from the one-BOS prompt.
    let gen_cfg = lm_core::generate::GenerationConfig {
        max_new_tokens: 2,
        stop: Vec::new(),
        ..Default::default()
    };
    let prompt = m.encode_chat(&ctx).unwrap();
    let g = lm_core::generate::generate(&m, &[prompt], &gen_cfg, &ExpertMix::Base).unwrap();
    assert_eq!(
        ev[0].exact_match.as_ref().unwrap().per_item[0].prediction,
        g[0].text
    );
}
