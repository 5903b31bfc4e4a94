//! The whole curriculum with fake roles: rounds, hard shares, continuation, ablations, resume
//! after a crash, and bad roles.

use std::path::Path;

use tapir_curriculum::TapirError;
use tapir_curriculum::config::{Ablation, CurriculumConfig};
use tapir_curriculum::curriculum::{Instruction, Roles, RoundRecord, run_curriculum};
use tapir_curriculum::expand::ExpansionConfig;
use tapir_curriculum::fakes::{FakeClassifier, FakeJudge, FakeStudent, FakeTeacher};
use tapir_curriculum::similarity::RougeL;
use tapir_curriculum::taxonomy::TaskCategory;

fn seeds() -> Vec<Instruction> {
    let texts = [
        "Compute 17 times 23.",
        "Find the GCD of 84 and 36.",
        "Is every square a rectangle? Explain the hard logic.",
        "Write a poem about the sea, an easy one.",
        "Sort these words: pear, apple, fig (easy).",
        "How many legs do 3 spiders have?",
        "Reverse the word stone, easy.",
        "What follows from: all cats are mammals?",
    ];
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| Instruction {
            id: format!("s{i}"),
            text: t.to_string(),
        })
        .collect()
}

fn heldout() -> Vec<Instruction> {
    [
        "Add 5 and 9.",
        "Explain why ice floats.",
        "Name a prime above 20 (easy).",
    ]
    .iter()
    .enumerate()
    .map(|(i, t)| Instruction {
        id: format!("h{i}"),
        text: t.to_string(),
    })
    .collect()
}

fn config() -> CurriculumConfig {
    CurriculumConfig {
        rounds: 2,
        alpha: vec![0.5, 0.75],
        sizes: vec![8, 12],
        expansion: ExpansionConfig {
            per_round: 2,
            ..ExpansionConfig::default()
        },
        ..CurriculumConfig::default()
    }
}

struct Fakes {
    teacher: FakeTeacher,
    judge: FakeJudge,
    classifier: FakeClassifier,
    student: FakeStudent,
    dedup: RougeL,
}

impl Fakes {
    fn new() -> Self {
        Self {
            teacher: FakeTeacher::default(),
            judge: FakeJudge::default(),
            classifier: FakeClassifier::default(),
            student: FakeStudent::default(),
            dedup: RougeL::default(),
        }
    }

    fn run(
        &mut self,
        dir: &Path,
        config: &CurriculumConfig,
    ) -> tapir_curriculum::Result<tapir_curriculum::curriculum::CurriculumOutcome> {
        let roles = Roles {
            teacher: &mut self.teacher,
            judge: &mut self.judge,
            classifier: &mut self.classifier,
            student: &mut self.student,
            dedup: &mut self.dedup,
        };
        run_curriculum(dir, &seeds(), &heldout(), roles, config, &mut |_| {})
    }
}

/// The round files that must be equal between an uninterrupted and a resumed run (round.json
/// holds timings and call counts of the process that finished it, so it is compared without them).
fn fingerprint(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for r in 0..=2 {
        let d = dir.join("rounds").join(format!("r{r}"));
        for f in [
            "heldout.json",
            "heldout_judge.json",
            "mfd.json",
            "expanded.json",
            "plan.json",
            "refined.json",
            "data.jsonl",
            "train.json",
            "train/weights.json",
        ] {
            if let Ok(s) = std::fs::read_to_string(d.join(f)) {
                out.push((format!("r{r}/{f}"), s));
            }
        }
        if let Ok(s) = std::fs::read_to_string(d.join("round.json")) {
            let mut rec: RoundRecord = serde_json::from_str(&s).unwrap();
            rec.seconds = 0.0;
            rec.calls.clear();
            out.push((
                format!("r{r}/round.json"),
                serde_json::to_string(&rec).unwrap(),
            ));
        }
    }
    out
}

#[test]
fn two_rounds_score_expand_rebalance_refine_and_train_in_sequence() {
    let tmp = tempfile::tempdir().unwrap();
    let mut f = Fakes::new();
    let out = f.run(tmp.path(), &config()).unwrap();
    assert_eq!(out.rounds.len(), 3);
    // round 1: base student (S0) scores 5 on hard items, 8 on the 3 easy ones: MFD 3 or 0
    let r1 = &out.rounds[1];
    let m1 = r1.mfd.as_ref().unwrap();
    assert_eq!(m1.items, 8);
    assert_eq!((m1.hard, m1.easy, m1.unscored), (5, 3, 0));
    assert_eq!(r1.mfd_values.iter().filter(|v| **v == 3.0).count(), 5);
    // the training set: round(0.5 * 8) = 4 hard, 4 easy
    assert_eq!(r1.plan.items.len(), 8);
    assert_eq!(r1.plan.hard_part, 4);
    assert_eq!(r1.plan.hard_available, 5 + r1.expansion.accepted);
    assert_eq!(r1.expansion.accepted, 2);
    // round 2: S1 scores 7 on hard items -> MFD 1 -> still hard (≥ δ = 1); the pool grew by 2
    let r2 = &out.rounds[2];
    assert_eq!(r2.pool, 10);
    let m2 = r2.mfd.as_ref().unwrap();
    assert_eq!(m2.items, 10);
    assert!(r2.mfd_values.contains(&1.0));
    assert_eq!(r2.plan.hard_part, 9); // round(0.75 * 12)
    // the student continued from round 1 when training round 2
    assert_eq!(f.student.trained, vec![(1, 0, 8), (2, 1, 12)]);
    // training targets are refined; refinement asked once per distinct item
    let data = std::fs::read_to_string(tmp.path().join("rounds/r1/data.jsonl")).unwrap();
    assert!(data.lines().all(|l| l.contains("Refined (")), "{data}");
    assert!(f.teacher.refinements > 0);
    // held-out: the base student loses to the teacher; S2 wins more against the base
    let base = &out.rounds[0].heldout.vs_teacher;
    assert_eq!(base.scored, 3);
    assert!(base.win_rate.unwrap() < 0.5);
    let last = &out.rounds[2].heldout;
    assert!(last.vs_base.as_ref().unwrap().win_rate.unwrap() >= 0.5);
    assert!(last.vs_teacher.win_rate.unwrap() > base.win_rate.unwrap());
    // the classifier's categories reach the pool
    assert!(out.pool.iter().any(|p| p.category == TaskCategory::Writing));
    // expansion instructions were asked with categories from the target mix (not only seeds')
    assert!(!f.teacher.expansions.is_empty());
    // calls were counted
    assert!(out.calls["judge"].made > 0);
    assert_eq!(
        out.final_student.unwrap(),
        tmp.path().join("rounds/r2/train")
    );
}

#[test]
fn a_crash_then_a_resume_gives_the_same_files() {
    let clean = tempfile::tempdir().unwrap();
    Fakes::new().run(clean.path(), &config()).unwrap();

    let crashed = tempfile::tempdir().unwrap();
    let mut first = Fakes::new();
    first.student.fail_train_round = Some(2);
    let e = first
        .run(crashed.path(), &config())
        .unwrap_err()
        .to_string();
    assert!(e.contains("simulated crash"), "{e}");
    assert!(crashed.path().join("rounds/r1/round.json").is_file());
    assert!(!crashed.path().join("rounds/r2/round.json").exists());
    // a new process: fresh roles, the student must be brought back to round 1
    let mut second = Fakes::new();
    second.run(crashed.path(), &config()).unwrap();
    assert_eq!(second.student.loaded, vec![1]);
    assert_eq!(second.student.trained, vec![(2, 1, 12)]);
    // nothing finished before the crash was asked again
    assert!(
        second.classifier.stats.made == 0
            && second.teacher.refinements < first.teacher.refinements + 1
    );
    assert_eq!(fingerprint(clean.path()), fingerprint(crashed.path()));

    // and a third run with everything done only reads
    let mut third = Fakes::new();
    let out = third.run(crashed.path(), &config()).unwrap();
    assert_eq!(out.rounds.len(), 3);
    assert_eq!(third.judge.requests.len() + third.teacher.stats.total(), 0);
    assert_eq!(fingerprint(clean.path()), fingerprint(crashed.path()));
}

#[test]
fn resuming_after_a_crash_inside_any_step_gives_the_same_files() {
    let clean = tempfile::tempdir().unwrap();
    Fakes::new().run(clean.path(), &config()).unwrap();
    // delete each step file of round 2 in turn (as if the process died before writing it)
    for file in [
        "round.json",
        "heldout_judge.json",
        "heldout.json",
        "train.json",
        "data.jsonl",
        "refined.json",
        "plan.json",
        "expanded.json",
    ] {
        let dir = tempfile::tempdir().unwrap();
        Fakes::new().run(dir.path(), &config()).unwrap();
        let r2 = dir.path().join("rounds/r2");
        // remove this file and every later one
        let order = [
            "expanded.json",
            "plan.json",
            "refined.json",
            "data.jsonl",
            "train.json",
            "heldout.json",
            "heldout_judge.json",
            "round.json",
        ];
        let from = order.iter().position(|f| *f == file).unwrap();
        for f in &order[from..] {
            let _ = std::fs::remove_file(r2.join(f));
        }
        Fakes::new().run(dir.path(), &config()).unwrap();
        assert_eq!(
            fingerprint(clean.path()),
            fingerprint(dir.path()),
            "after losing {file}"
        );
    }
}

#[test]
fn a_warmup_student_trains_first_round_one_starts_from_it_and_resumes() {
    let cfg = CurriculumConfig {
        warmup: 3,
        ..config()
    };
    let clean = tempfile::tempdir().unwrap();
    let mut f = Fakes::new();
    let out = f.run(clean.path(), &cfg).unwrap();
    let w = out.warmup.as_ref().expect("a warm-up record");
    assert_eq!(w.items.len(), 3);
    // 3 distinct seed ids, trained as round 0 before round 1, with the teacher's plain answers
    let mut ids = w.items.clone();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3);
    assert_eq!(f.student.trained, vec![(0, 0, 3), (1, 0, 8), (2, 1, 12)]);
    let data = std::fs::read_to_string(clean.path().join("warmup/data.jsonl")).unwrap();
    assert_eq!(data.lines().count(), 3);
    assert!(data.lines().all(|l| l.contains("T: answer to")), "{data}");
    assert!(clean.path().join("warmup/warmup.json").is_file());
    // the base student's baseline is unchanged by the warm-up
    let plain = tempfile::tempdir().unwrap();
    let no_warmup = Fakes::new().run(plain.path(), &config()).unwrap();
    assert_eq!(out.rounds[0].heldout, no_warmup.rounds[0].heldout);
    assert!(no_warmup.warmup.is_none());
    assert!(!plain.path().join("warmup").exists());

    // a crash in round 1's training: the new process loads the warm-up student first
    let crashed = tempfile::tempdir().unwrap();
    let mut first = Fakes::new();
    first.student.fail_train_round = Some(1);
    first.run(crashed.path(), &cfg).unwrap_err();
    let mut second = Fakes::new();
    second.run(crashed.path(), &cfg).unwrap();
    assert_eq!(second.student.loaded, vec![0]);
    assert_eq!(second.student.trained, vec![(1, 0, 8), (2, 1, 12)]);
    assert_eq!(fingerprint(clean.path()), fingerprint(crashed.path()));
    // losing the warm-up's record (a kill before it was written) retrains nothing
    std::fs::remove_file(crashed.path().join("warmup/warmup.json")).unwrap();
    let mut third = Fakes::new();
    let again = third.run(crashed.path(), &cfg).unwrap();
    assert!(third.student.trained.is_empty());
    assert_eq!(again.warmup, out.warmup);
}

#[test]
fn repeats_are_capped_and_extra_places_go_to_the_other_part() {
    let tmp = tempfile::tempdir().unwrap();
    let mut f = Fakes::new();
    let mut c = config();
    c.max_repeats = 1;
    c.alpha = vec![0.9, 0.9];
    let out = f.run(tmp.path(), &c).unwrap();
    // round 1: 5 hard seeds + 2 new = 7 hard items, round(0.9 * 8) = 7 places: no cap needed
    assert_eq!(out.rounds[1].plan.hard_part, 7);
    // round 2: 12 places, 11 hard: 1 copy each -> 11 hard, 1 easy, noted
    let r2 = &out.rounds[2].plan;
    assert_eq!(r2.hard_available, 9);
    assert_eq!(r2.hard_part, 9);
    assert_eq!(r2.items.len(), 12);
    assert!(
        r2.notes.iter().any(|n| n.contains("max_repeats")),
        "{:?}",
        r2.notes
    );
    let mut hard_ids: Vec<&String> = r2.items[..r2.hard_part].iter().collect();
    hard_ids.sort();
    hard_ids.dedup();
    assert_eq!(hard_ids.len(), 9, "each hard item once");
}

#[test]
fn ablations_turn_components_off() {
    // no MFD filter: the judge sees only held-out pairs; no hard part
    let tmp = tempfile::tempdir().unwrap();
    let mut f = Fakes::new();
    let mut c = config();
    c.ablation = Ablation {
        mfd_filter: false,
        ..Ablation::default()
    };
    let out = f.run(tmp.path(), &c).unwrap();
    assert!(out.rounds[1].mfd.is_none());
    assert_eq!(out.rounds[1].plan.hard_part, 0);
    assert_eq!(out.rounds[1].plan.items.len(), 8);
    let heldout_requests = 3 * 2 + 2 * (3 * 2 * 2);
    assert_eq!(f.judge.requests.len(), heldout_requests);

    // no refinement: plain teacher answers, no refine calls
    let tmp = tempfile::tempdir().unwrap();
    let mut f = Fakes::new();
    let mut c = config();
    c.ablation.refine = false;
    f.run(tmp.path(), &c).unwrap();
    assert_eq!(f.teacher.refinements, 0);
    let data = std::fs::read_to_string(tmp.path().join("rounds/r1/data.jsonl")).unwrap();
    assert!(
        data.lines()
            .all(|l| l.contains("\"response\":\"T: answer to")),
        "{data}"
    );

    // single round: one round of 20 items
    let tmp = tempfile::tempdir().unwrap();
    let mut f = Fakes::new();
    let mut c = config();
    c.ablation.single_round = true;
    let out = f.run(tmp.path(), &c).unwrap();
    assert_eq!(out.rounds.len(), 2);
    assert_eq!(out.rounds[1].plan.items.len(), 20);
    assert_eq!(f.student.trained.len(), 1);

    // no rebalancing: the training mix is drawn uniformly, expansion keeps the seeds' categories
    let tmp = tempfile::tempdir().unwrap();
    let mut f = Fakes::new();
    let mut c = config();
    c.ablation.rebalance = false;
    f.run(tmp.path(), &c).unwrap();
    let hard_cats = [TaskCategory::Math, TaskCategory::Reasoning];
    assert!(
        f.teacher
            .expansions
            .iter()
            .all(|e| hard_cats.contains(&e.category))
    );
}

#[test]
fn a_judge_that_never_scores_stops_the_round_with_its_outputs_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let mut f = Fakes::new();
    f.judge.never_parse = true;
    let e = f.run(tmp.path(), &config()).unwrap_err();
    assert!(
        matches!(
            e,
            TapirError::NothingScored {
                items: 8,
                attempts: 3,
                ..
            }
        ),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("rounds/r1/mfd.json") && msg.contains("mfd_filter = false"),
        "{msg}"
    );
    assert!(tmp.path().join("rounds/r1/mfd.json").is_file());
    // 8 items x 2 orders x 3 asks on the pool (+ the held-out baseline before it)
    let pool_asks = f
        .judge
        .requests
        .iter()
        .filter(|r| seeds().iter().any(|s| s.text == r.instruction))
        .count();
    assert_eq!(pool_asks, 8 * 2 * 3);
    // the round-0 baseline recorded the held-out pairs as unscored, not as numbers
    let r0: RoundRecord = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("rounds/r0/round.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (r0.heldout.vs_teacher.scored, r0.heldout.vs_teacher.unscored),
        (0, 3)
    );
    assert_eq!(r0.heldout.vs_teacher.win_rate, None);
}

#[test]
fn empty_teacher_answers_drop_items_and_an_all_empty_teacher_is_an_error() {
    let mut s = seeds();
    s[0].text.push_str(" [empty]");
    let tmp = tempfile::tempdir().unwrap();
    let mut f = Fakes::new();
    let roles = Roles {
        teacher: &mut f.teacher,
        judge: &mut f.judge,
        classifier: &mut f.classifier,
        student: &mut f.student,
        dedup: &mut f.dedup,
    };
    let out = run_curriculum(tmp.path(), &s, &heldout(), roles, &config(), &mut |_| {}).unwrap();
    assert_eq!(out.prepare.pool, 7);
    assert_eq!(out.prepare.dropped.len(), 1);
    assert_eq!(out.prepare.dropped[0].id, "s0");
    assert!(out.prepare.dropped[0].reason.contains("empty"));

    let all: Vec<Instruction> = seeds()
        .into_iter()
        .map(|mut i| {
            i.text.push_str(" [empty]");
            i
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let mut f = Fakes::new();
    let roles = Roles {
        teacher: &mut f.teacher,
        judge: &mut f.judge,
        classifier: &mut f.classifier,
        student: &mut f.student,
        dedup: &mut f.dedup,
    };
    let e = run_curriculum(tmp.path(), &all, &heldout(), roles, &config(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("all 8 seed instructions") && e.contains("empty"),
        "{e}"
    );
}

#[test]
fn an_unknown_category_from_the_classifier_becomes_others_and_is_counted() {
    let mut s = seeds();
    s[2].text = "Explain this unknown thing, please.".into();
    let tmp = tempfile::tempdir().unwrap();
    let mut f = Fakes::new();
    let roles = Roles {
        teacher: &mut f.teacher,
        judge: &mut f.judge,
        classifier: &mut f.classifier,
        student: &mut f.student,
        dedup: &mut f.dedup,
    };
    let out = run_curriculum(tmp.path(), &s, &heldout(), roles, &config(), &mut |_| {}).unwrap();
    assert_eq!(
        out.pool.iter().find(|p| p.id == "s2").unwrap().category,
        TaskCategory::Others
    );
    assert_eq!(
        out.prepare.classes.unknown_answers,
        vec![("Geography".to_string(), 1)]
    );
}
