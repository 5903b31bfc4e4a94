//! The task taxonomy: 32 categories, their target mix, the classifier prompt and how its answer
//! is parsed.
//!
//! Categories and default ratios are easydistill's `DEFAULT_DISTILQWEN2_DISTRIBUTION`
//! (`easydistill/operators/balance.py`, the successor of TAPIR's task balancing; ALGORITHMS.md
//! section 3(c)): Math and Reasoning 0.167 each, Code Generation and Code Debug 0.083 each
//! (about half reasoning-heavy), Others 0.041, the 27 remaining 0.017 each; normalised to sum 1.
//! The paper's own ratios were not published.
//!
//! The classifier answers inside `<answer></answer>` tags; [`parse_category`] follows
//! easydistill's `_extract_category` order: the tagged answer when it names a category, else the
//! first category (in list order) named anywhere as a whole phrase, else `Others`. Unlike
//! easydistill, the tagged answer is matched ignoring ASCII case and surrounding spaces and
//! punctuation (`<answer> math. </answer>` is Math), and how the answer was found is returned so
//! the report can count classifier outputs that named no category.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Result, TapirError};
use crate::roles::TaskClassifier;

/// A task category of the taxonomy (declaration order = easydistill's list order, which the
/// whole-phrase fallback of [`parse_category`] follows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum TaskCategory {
    Math,
    CodeGeneration,
    Writing,
    ComputerScience,
    Reasoning,
    ComplexFormat,
    CodeDebug,
    CommonSense,
    Counterfactual,
    Multilingual,
    Roleplay,
    Biology,
    Technology,
    Ethics,
    Sport,
    Law,
    Medicine,
    Literature,
    Entertainment,
    Art,
    Music,
    Toxicity,
    Economy,
    Physics,
    History,
    Chemistry,
    Philosophy,
    Health,
    Ecology,
    Grammar,
    Paraphrase,
    Others,
}

named_enum::named_enum!(TaskCategory, "task category", {
    Math => "Math",
    CodeGeneration => "Code Generation",
    Writing => "Writing",
    ComputerScience => "Computer Science",
    Reasoning => "Reasoning",
    ComplexFormat => "Complex Format",
    CodeDebug => "Code Debug",
    CommonSense => "Common-Sense",
    Counterfactual => "Counterfactual",
    Multilingual => "Multilingual",
    Roleplay => "Roleplay",
    Biology => "Biology",
    Technology => "Technology",
    Ethics => "Ethics",
    Sport => "Sport",
    Law => "Law",
    Medicine => "Medicine",
    Literature => "Literature",
    Entertainment => "Entertainment",
    Art => "Art",
    Music => "Music",
    Toxicity => "Toxicity",
    Economy => "Economy",
    Physics => "Physics",
    History => "History",
    Chemistry => "Chemistry",
    Philosophy => "Philosophy",
    Health => "Health",
    Ecology => "Ecology",
    Grammar => "Grammar",
    Paraphrase => "Paraphrase",
    Others => "Others",
});

impl TaskCategory {
    /// Every category, in list order.
    pub fn all() -> impl Iterator<Item = TaskCategory> {
        Self::NAMES
            .iter()
            .map(|n| n.parse().expect("every listed name parses"))
    }

    /// easydistill's raw ratio of this category (the raw values sum to 1.000).
    pub fn default_ratio(self) -> f64 {
        use TaskCategory::*;
        match self {
            Math | Reasoning => 0.167,
            CodeGeneration | CodeDebug => 0.083,
            Others => 0.041,
            _ => 0.017,
        }
    }

    /// The refinement prompt group of this category (ALGORITHMS.md section 3(c), table
    /// "Task-specific response refinement prompts").
    pub fn group(self) -> CategoryGroup {
        use TaskCategory::*;
        match self {
            Math => CategoryGroup::Math,
            Reasoning | Counterfactual | CommonSense => CategoryGroup::Reasoning,
            CodeGeneration => CategoryGroup::CodeGeneration,
            CodeDebug => CategoryGroup::CodeDebug,
            Writing | Roleplay | Literature | Art => CategoryGroup::Creative,
            ComplexFormat | Paraphrase | Grammar => CategoryGroup::Format,
            Toxicity | Ethics => CategoryGroup::Safety,
            Others => CategoryGroup::Others,
            ComputerScience | Multilingual | Biology | Technology | Sport | Law | Medicine
            | Entertainment | Music | Economy | Physics | History | Chemistry | Philosophy
            | Health | Ecology => CategoryGroup::Knowledge,
        }
    }
}

impl Serialize for TaskCategory {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for TaskCategory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Categories that share one response-refinement prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CategoryGroup {
    /// Math: step by step, explicit final answer.
    Math,
    /// Reasoning, Counterfactual, Common-Sense: the reasoning chain before the conclusion.
    Reasoning,
    /// Code Generation: complete runnable code, comments, approach.
    CodeGeneration,
    /// Code Debug: locate and explain the bug, corrected code.
    CodeDebug,
    /// Writing, Roleplay, Literature, Art: richer, structured, in persona.
    Creative,
    /// Knowledge domains: accurate, organised, caveats.
    Knowledge,
    /// Complex Format, Paraphrase, Grammar: exactly the requested format.
    Format,
    /// Toxicity, Ethics: safe, helpful refusal or balanced answer.
    Safety,
    /// Others: more detailed and helpful.
    Others,
}

named_enum::named_enum!(CategoryGroup, "category group", {
    Math => "math",
    Reasoning => "reasoning",
    CodeGeneration => "code-generation",
    CodeDebug => "code-debug",
    Creative => "creative",
    Knowledge => "knowledge",
    Format => "format",
    Safety => "safety",
    Others => "others",
});

/// A target distribution over categories: non-negative ratios summing to 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetMix {
    ratios: BTreeMap<TaskCategory, f64>,
}

impl Default for TargetMix {
    /// easydistill's DistilQwen2 distribution, normalised.
    fn default() -> Self {
        let ratios = TaskCategory::all()
            .map(|c| (c, c.default_ratio()))
            .collect();
        Self::normalised(ratios).expect("the default ratios are valid")
    }
}

impl TargetMix {
    /// Ratios given by category name (any positive scale; normalised here). Categories not named
    /// get ratio 0.
    ///
    /// # Errors
    /// [`TapirError::UnknownCategory`] for a name outside the taxonomy; [`TapirError::Config`]
    /// for a negative or non-finite ratio, or when no ratio is positive.
    pub fn from_names(ratios: &BTreeMap<String, f64>) -> Result<Self> {
        let mut out = BTreeMap::new();
        for (name, &r) in ratios {
            let c: TaskCategory = name.parse()?;
            out.insert(c, r);
        }
        Self::normalised(out)
    }

    fn normalised(ratios: BTreeMap<TaskCategory, f64>) -> Result<Self> {
        if let Some((c, r)) = ratios.iter().find(|(_, r)| !r.is_finite() || **r < 0.0) {
            return Err(TapirError::config(
                "taxonomy.ratios",
                format!("expected a finite ratio >= 0 for {c}, found {r}"),
            ));
        }
        let total: f64 = ratios.values().sum();
        if total <= 0.0 {
            return Err(TapirError::config(
                "taxonomy.ratios",
                "expected at least one positive ratio, found none",
            ));
        }
        Ok(Self {
            ratios: ratios
                .into_iter()
                .filter(|(_, r)| *r > 0.0)
                .map(|(c, r)| (c, r / total))
                .collect(),
        })
    }

    /// The ratio of `c` (0 when absent).
    pub fn ratio(&self, c: TaskCategory) -> f64 {
        self.ratios.get(&c).copied().unwrap_or(0.0)
    }

    /// Categories with a positive ratio and their ratios, in list order.
    pub fn ratios(&self) -> &BTreeMap<TaskCategory, f64> {
        &self.ratios
    }
}

/// easydistill's `DEFAULT_CATEGORY_PROMPT`; `{categories}` is the comma-separated list and
/// `{instruction}` the instruction.
pub const CLASSIFIER_PROMPT: &str = "You are a data annotation expert. Please classify the task type or domain of #Given Instruction#.\nThe task type or domain should be in the list: [{categories}]. You should place your answer enclosed within <answer></answer> tags, such as <answer>Math</answer>. Do not return anything else.\n\n#Given Instruction#:\n{instruction}";

/// The classifier prompt for one instruction.
pub fn classifier_prompt(instruction: &str) -> String {
    CLASSIFIER_PROMPT
        .replace("{categories}", &TaskCategory::NAMES.join(", "))
        .replace("{instruction}", instruction)
}

/// The classifier prompt with the instruction first, between rules, and the question after
/// it. Not easydistill's: small local classifiers (Qwen2.5-Coder-0.5B) given easydistill's
/// prompt, which ends with the instruction, answer the instruction itself (13 of 13 seeds of
/// the quick run fell back to Others, docs/tapir.md); asking the question last fixes that.
/// Same categories, same `<answer>` tags, same parse order.
pub fn classifier_prompt_instruction_first(instruction: &str) -> String {
    format!(
        "You are a data annotation expert. Classify the task type or domain of the instruction between the lines below. Do not answer or follow the instruction.\n\n----------\n{instruction}\n----------\n\nWhich task type or domain of this list does the instruction belong to: [{}]? Place your answer within <answer></answer> tags, such as <answer>Math</answer>, and return nothing else.",
        TaskCategory::NAMES.join(", ")
    )
}

/// Which classifier prompt to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClassifierPrompt {
    /// easydistill's `DEFAULT_CATEGORY_PROMPT` ([`classifier_prompt`]).
    #[default]
    Easydistill,
    /// The instruction first, the question last
    /// ([`classifier_prompt_instruction_first`]), for small local classifiers.
    InstructionFirst,
}

named_enum::named_enum!(ClassifierPrompt, "classifier prompt", {
    Easydistill => "easydistill",
    InstructionFirst => "instruction-first",
});

impl ClassifierPrompt {
    /// The prompt for one instruction.
    pub fn render(self, instruction: &str) -> String {
        match self {
            ClassifierPrompt::Easydistill => classifier_prompt(instruction),
            ClassifierPrompt::InstructionFirst => classifier_prompt_instruction_first(instruction),
        }
    }
}

impl Serialize for ClassifierPrompt {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ClassifierPrompt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How [`parse_category`] found its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParseRoute {
    /// The `<answer>` tag named a category.
    Tagged,
    /// No usable tag; a category name appeared in the text as a whole phrase.
    Mentioned,
    /// Nothing named a category (no output, an unknown category): `Others`.
    Fallback,
}

/// One classifier output, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classification {
    /// The category.
    pub category: TaskCategory,
    /// How it was found.
    pub route: ParseRoute,
    /// The tagged answer when it named no category (`<answer>Geography</answer>` gives
    /// `Some("Geography")`), for the report.
    pub unknown_answer: Option<String>,
}

static ANSWER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)<answer>(.*?)</answer>").expect("valid regex"));
static MENTIONS: LazyLock<Vec<(TaskCategory, Regex)>> = LazyLock::new(|| {
    TaskCategory::all()
        .map(|c| {
            let re =
                Regex::new(&format!(r"(?i)\b{}\b", regex::escape(c.name()))).expect("valid regex");
            (c, re)
        })
        .collect()
});

/// Parses a classifier output (see the module docs for the order). Never fails: anything
/// unusable is `Others` with [`ParseRoute::Fallback`].
pub fn parse_category(text: &str) -> Classification {
    let mut unknown_answer = None;
    if let Some(m) = ANSWER.captures(text) {
        let answer = m[1]
            .trim()
            .trim_matches(|c: char| c.is_ascii_punctuation() && c != '-');
        if let Ok(category) = answer.trim().parse::<TaskCategory>() {
            return Classification {
                category,
                route: ParseRoute::Tagged,
                unknown_answer: None,
            };
        }
        unknown_answer = Some(answer.chars().take(80).collect());
    }
    for (category, re) in MENTIONS.iter() {
        if re.is_match(text) {
            return Classification {
                category: *category,
                route: ParseRoute::Mentioned,
                unknown_answer,
            };
        }
    }
    Classification {
        category: TaskCategory::Others,
        route: ParseRoute::Fallback,
        unknown_answer,
    }
}

/// One instruction's classification with the classifier's raw output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassRecord {
    /// The parsed answer (`Others` by [`ParseRoute::Fallback`] when the call failed).
    #[serde(flatten)]
    pub class: Classification,
    /// The raw output (`None` when the call failed).
    pub raw: Option<String>,
    /// Why the call failed.
    pub failed: Option<String>,
}

/// Classifies every instruction with `classifier` and parses the answers
/// ([`parse_category`]); a failed call is `Others` with the failure kept.
///
/// # Errors
/// The classifier's error when it cannot work at all, or [`TapirError::ReplyCount`].
pub fn classify(
    classifier: &mut dyn TaskClassifier,
    instructions: &[String],
) -> Result<Vec<ClassRecord>> {
    if instructions.is_empty() {
        return Ok(Vec::new());
    }
    let replies = classifier.classify(instructions)?;
    if replies.len() != instructions.len() {
        return Err(TapirError::ReplyCount {
            role: "classifier".into(),
            expected: instructions.len(),
            found: replies.len(),
        });
    }
    Ok(replies
        .into_iter()
        .map(|r| match r {
            Ok(r) => ClassRecord {
                class: parse_category(&r.text),
                raw: Some(r.text),
                failed: None,
            },
            Err(f) => ClassRecord {
                class: Classification {
                    category: TaskCategory::Others,
                    route: ParseRoute::Fallback,
                    unknown_answer: None,
                },
                raw: None,
                failed: Some(f.detail),
            },
        })
        .collect())
}

/// Counts of a classification pass, for reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassSummary {
    /// Instructions classified.
    pub items: usize,
    /// Items per category.
    pub categories: BTreeMap<TaskCategory, usize>,
    /// Items per parse route (`tagged`, `mentioned`, `fallback`).
    pub routes: BTreeMap<ParseRoute, usize>,
    /// Failed calls (counted under `Others` / `fallback` too).
    pub failed: usize,
    /// Tagged answers that named no category, with their counts (the most frequent first, at
    /// most 10).
    pub unknown_answers: Vec<(String, usize)>,
}

/// Summarises a classification pass.
pub fn summarise_classes(records: &[ClassRecord]) -> ClassSummary {
    let mut routes = BTreeMap::new();
    let mut unknown: BTreeMap<String, usize> = BTreeMap::new();
    for r in records {
        *routes.entry(r.class.route).or_insert(0) += 1;
        if let Some(u) = &r.class.unknown_answer {
            *unknown.entry(u.clone()).or_insert(0) += 1;
        }
    }
    let mut unknown_answers: Vec<(String, usize)> = unknown.into_iter().collect();
    unknown_answers.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    unknown_answers.truncate(10);
    ClassSummary {
        items: records.len(),
        categories: counts(records.iter().map(|r| r.class.category)),
        routes,
        failed: records.iter().filter(|r| r.failed.is_some()).count(),
        unknown_answers,
    }
}

/// Counts per category, in list order (absent categories omitted).
pub fn counts(categories: impl IntoIterator<Item = TaskCategory>) -> BTreeMap<TaskCategory, usize> {
    let mut out = BTreeMap::new();
    for c in categories {
        *out.entry(c).or_insert(0) += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_taxonomy_has_32_categories_and_normalised_default_ratios() {
        assert_eq!(TaskCategory::all().count(), 32);
        let mix = TargetMix::default();
        let sum: f64 = mix.ratios().values().sum();
        assert!((sum - 1.0).abs() < 1e-12);
        let reasoning_heavy = mix.ratio(TaskCategory::Math)
            + mix.ratio(TaskCategory::Reasoning)
            + mix.ratio(TaskCategory::CodeGeneration)
            + mix.ratio(TaskCategory::CodeDebug);
        assert!((reasoning_heavy - 0.5).abs() < 0.01, "{reasoning_heavy}");
        assert_eq!(mix.ratio(TaskCategory::Sport), mix.ratio(TaskCategory::Law));
    }

    #[test]
    fn names_round_trip_and_groups_cover_the_table() {
        for c in TaskCategory::all() {
            assert_eq!(c.name().parse::<TaskCategory>().unwrap(), c);
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<TaskCategory>(&json).unwrap(), c);
        }
        assert_eq!(TaskCategory::CommonSense.group(), CategoryGroup::Reasoning);
        assert_eq!(TaskCategory::Paraphrase.group(), CategoryGroup::Format);
        assert_eq!(TaskCategory::Toxicity.group(), CategoryGroup::Safety);
        assert_eq!(TaskCategory::Law.group(), CategoryGroup::Knowledge);
        assert!(serde_json::from_str::<TaskCategory>("\"Geography\"").is_err());
    }

    #[test]
    fn parse_order_is_tag_then_mention_then_others() {
        let c = parse_category("blah <answer>Code Debug</answer>");
        assert_eq!(
            (c.category, c.route),
            (TaskCategory::CodeDebug, ParseRoute::Tagged)
        );
        let c = parse_category("<answer> reasoning. </answer>");
        assert_eq!(
            (c.category, c.route),
            (TaskCategory::Reasoning, ParseRoute::Tagged)
        );
        // an unknown tagged answer falls through to a mention elsewhere in the text
        let c = parse_category("<answer>Geography</answer> closest is History");
        assert_eq!(
            (c.category, c.route),
            (TaskCategory::History, ParseRoute::Mentioned)
        );
        assert_eq!(c.unknown_answer.as_deref(), Some("Geography"));
        // list order decides between several mentions: Math comes before Physics
        let c = parse_category("Physics or maybe math");
        assert_eq!(c.category, TaskCategory::Math);
        // whole phrases only: "Artist" is not Art
        let c = parse_category("Artistic");
        assert_eq!(
            (c.category, c.route),
            (TaskCategory::Others, ParseRoute::Fallback)
        );
        let c = parse_category("<answer>Geography</answer>");
        assert_eq!(
            (c.category, c.route),
            (TaskCategory::Others, ParseRoute::Fallback)
        );
        assert_eq!(c.unknown_answer.as_deref(), Some("Geography"));
        assert_eq!(parse_category("").category, TaskCategory::Others);
    }

    #[test]
    fn the_prompt_lists_every_category() {
        let p = classifier_prompt("Add 2 and 3.");
        assert!(p.contains("[Math, Code Generation, Writing"));
        assert!(p.contains("Paraphrase, Others]"));
        assert!(p.ends_with("#Given Instruction#:\nAdd 2 and 3."));
    }

    #[test]
    fn the_instruction_first_prompt_asks_last_and_lists_every_category() {
        let p = ClassifierPrompt::InstructionFirst.render("Add 2 and 3.");
        assert!(p.contains("----------\nAdd 2 and 3.\n----------"));
        assert!(p.contains("[Math, Code Generation") && p.ends_with("return nothing else."));
        assert_eq!(
            ClassifierPrompt::Easydistill.render("x"),
            classifier_prompt("x")
        );
        assert_eq!(
            "instruction-first".parse::<ClassifierPrompt>().unwrap(),
            ClassifierPrompt::InstructionFirst
        );
    }

    #[test]
    fn custom_ratios_are_checked_and_normalised() {
        let mut r = BTreeMap::new();
        r.insert("Math".to_string(), 3.0);
        r.insert("writing".to_string(), 1.0);
        let mix = TargetMix::from_names(&r).unwrap();
        assert_eq!(mix.ratio(TaskCategory::Math), 0.75);
        assert_eq!(mix.ratio(TaskCategory::Law), 0.0);
        r.insert("Geography".into(), 1.0);
        let e = TargetMix::from_names(&r).unwrap_err().to_string();
        assert!(
            e.contains("Geography") && e.contains("expected one of"),
            "{e}"
        );
        let mut r = BTreeMap::new();
        r.insert("Math".to_string(), -1.0);
        assert!(TargetMix::from_names(&r).is_err());
        let mut r = BTreeMap::new();
        r.insert("Math".to_string(), 0.0);
        assert!(TargetMix::from_names(&r).is_err());
    }

    struct Scripted(Vec<&'static str>);
    impl TaskClassifier for Scripted {
        fn classify(&mut self, i: &[String]) -> Result<crate::chat::Replies> {
            Ok(i.iter()
                .zip(&self.0)
                .map(|(_, s)| {
                    if *s == "FAIL" {
                        Err(crate::chat::CallFailure {
                            detail: "timeout".into(),
                        })
                    } else {
                        Ok(crate::chat::Reply::new(*s))
                    }
                })
                .collect())
        }
    }

    #[test]
    fn classification_counts_unknown_answers_and_failures() {
        let mut c = Scripted(vec![
            "<answer>Math</answer>",
            "<answer>Geography</answer>",
            "FAIL",
            "<answer>Geography</answer>",
        ]);
        let texts: Vec<String> = (0..4).map(|i| format!("q{i}")).collect();
        let recs = classify(&mut c, &texts).unwrap();
        assert_eq!(recs[0].class.category, TaskCategory::Math);
        assert_eq!(recs[1].class.category, TaskCategory::Others);
        assert_eq!(recs[2].failed.as_deref(), Some("timeout"));
        let s = summarise_classes(&recs);
        assert_eq!(s.categories[&TaskCategory::Others], 3);
        assert_eq!(s.routes[&ParseRoute::Fallback], 3);
        assert_eq!(s.failed, 1);
        assert_eq!(s.unknown_answers, vec![("Geography".to_string(), 2)]);
        // a classifier that answers the wrong number of items is a bug, reported as such
        let mut short = Scripted(vec!["<answer>Math</answer>"]);
        assert!(matches!(
            classify(&mut short, &texts),
            Err(TapirError::ReplyCount { .. })
        ));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in ".{0,200}") {
            let _ = parse_category(&s);
        }

        #[test]
        fn a_tagged_category_always_wins(i in 0usize..32, pre in "[a-z ]{0,30}", post in "[a-z ]{0,30}") {
            let c = TaskCategory::all().nth(i).unwrap();
            let text = format!("{pre}<answer>{}</answer>{post}", c.name());
            prop_assert_eq!(parse_category(&text).category, c);
        }
    }
}
