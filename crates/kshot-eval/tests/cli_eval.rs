//! `openexpert eval` end to end on the real model (two items, 8 new tokens): the JSON report and
//! the Markdown table are written, and a K-shot file without rationales asked for reasoning
//! perplexity is a clear error.

use kshot_eval::cli::{CommonArgs, EvalArgs, FormatArg, run_eval};

fn args(task: &std::path::Path, output: &std::path::Path, metrics: &str) -> EvalArgs {
    EvalArgs {
        common: CommonArgs {
            model: lm_core::testing::default_model_path().display().to_string(),
            shots: 1,
            seed: 1,
            limit: None,
            format: FormatArg::Chat,
            extractor: "answer-is,auto".into(),
            max_new_tokens: 8,
            batch_size: 4,
            bootstrap: 50,
            markdown: None,
        },
        adapters: vec![],
        with_base: false,
        task: task.display().to_string(),
        metrics: metrics.into(),
        output: output.to_path_buf(),
    }
}

#[test]
fn eval_writes_json_and_markdown() {
    let dir = tempfile::tempdir().unwrap();
    let task = dir.path().join("t.jsonl");
    std::fs::write(
        &task,
        "{\"id\":\"a\",\"question\":\"What is 2 + 2?\",\"answer\":\"4\",\"rationale\":\"2 + 2 = 4.\"}\n\
         {\"id\":\"b\",\"question\":\"What is 3 + 3?\",\"answer\":\"6\",\"rationale\":\"3 + 3 = 6.\"}\n\
         {\"id\":\"c\",\"question\":\"What is 1 + 4?\",\"answer\":\"5\",\"rationale\":\"1 + 4 = 5.\"}\n",
    )
    .unwrap();
    let out = dir.path().join("r.json");
    run_eval(args(&task, &out, "auto"), "cpu").unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(report["items"], 2);
    assert_eq!(report["shots"], 1);
    let e = &report["evaluations"][0];
    assert_eq!(e["exact_match"]["total"], 2);
    assert_eq!(e["reasoning_ppl"]["per_item"].as_array().unwrap().len(), 2);
    assert!(e["reasoning_ppl"]["mean_ppl"].as_f64().unwrap() > 1.0);
    let md = std::fs::read_to_string(dir.path().join("r.md")).unwrap();
    assert!(md.contains("| base |"), "{md}");

    let bare = dir.path().join("bare.jsonl");
    std::fs::write(
        &bare,
        "{\"question\":\"q1\",\"answer\":\"1\"}\n{\"question\":\"q2\",\"answer\":\"2\"}\n",
    )
    .unwrap();
    let err = run_eval(args(&bare, &out, "rppl"), "cpu").unwrap_err();
    assert!(err.to_string().contains("rationale"), "{err}");
}
