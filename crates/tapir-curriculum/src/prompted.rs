//! The roles over any [`ChatBackend`]: they render TAPIR's prompts ([`crate::prompts`],
//! [`crate::taxonomy::classifier_prompt`]) into chat requests with each role's sampling, send
//! them, and count the calls. Local models and OpenAI-compatible endpoints implement only
//! [`ChatBackend`]; these types make them a [`Teacher`], [`Judge`] or [`TaskClassifier`].

use serde::{Deserialize, Serialize};

use crate::chat::{CallStats, ChatBackend, ChatMessage, ChatRequest, Replies, Sampling};
use crate::error::{Result, TapirError};
use crate::prompts::{
    JUDGE_REMINDER, JUDGE_SYSTEM, expansion_prompt, judge_prompt, refinement_prompt,
};
use crate::roles::{ExpandRequest, Judge, JudgeRequest, RefineRequest, TaskClassifier, Teacher};
use crate::taxonomy::ClassifierPrompt;

/// How a teacher samples (defaults: greedy answers and refinements; Lion's temperature 1 for
/// new instructions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TeacherSampling {
    /// Most new tokens of an answer or a refinement.
    pub max_new_tokens: usize,
    /// Most new tokens of a new instruction.
    pub expand_max_new_tokens: usize,
    /// Temperature of answers and refinements (0 = greedy).
    pub temperature: f32,
    /// Temperature of new instructions (Lion: 1.0).
    pub expand_temperature: f32,
    /// Nucleus mass of sampled outputs.
    pub top_p: f32,
    /// An optional system turn before every teacher request.
    pub system: Option<String>,
}

impl Default for TeacherSampling {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            expand_max_new_tokens: 96,
            temperature: 0.0,
            expand_temperature: 1.0,
            top_p: 1.0,
            system: None,
        }
    }
}

/// How a judge samples (defaults: greedy first asks as MT-Bench; re-asks at Lion's 0.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JudgeSampling {
    /// Most new tokens of a judgement.
    pub max_new_tokens: usize,
    /// Temperature of the first ask.
    pub temperature: f32,
    /// Temperature of re-asks after an unparsable output (a re-ask at temperature 0 would
    /// repeat the same output, and the call cache would replay it).
    pub reask_temperature: f32,
    /// Ask for an explanation before the scores (Lion's prompt); false asks for the two score
    /// lines only, which small local judges finish in far fewer tokens.
    pub explain: bool,
}

impl Default for JudgeSampling {
    fn default() -> Self {
        Self {
            max_new_tokens: 256,
            temperature: 0.0,
            reask_temperature: 0.2,
            explain: true,
        }
    }
}

/// How a classifier is asked and samples (easydistill: its prompt, temperature 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassifierSampling {
    /// Most new tokens of an answer.
    pub max_new_tokens: usize,
    /// `easydistill` (the reference prompt) or `instruction-first` (for small local models,
    /// which answer the instruction when it comes last; [`ClassifierPrompt`]).
    pub prompt: ClassifierPrompt,
}

impl Default for ClassifierSampling {
    fn default() -> Self {
        Self {
            max_new_tokens: 16,
            prompt: ClassifierPrompt::Easydistill,
        }
    }
}

fn send<B: ChatBackend>(
    backend: &B,
    role: &str,
    doing: String,
    requests: &[ChatRequest],
    stats: &mut CallStats,
) -> Result<Replies> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let replies = backend.complete(requests).map_err(|e| match e {
        e @ TapirError::Role { .. } => e,
        other => TapirError::role(role, backend.describe(), doing, other),
    })?;
    if replies.len() != requests.len() {
        return Err(TapirError::ReplyCount {
            role: role.into(),
            expected: requests.len(),
            found: replies.len(),
        });
    }
    stats.count(&replies);
    Ok(replies)
}

/// A [`Teacher`] over a chat backend.
#[derive(Debug)]
pub struct ChatTeacher<B> {
    backend: B,
    sampling: TeacherSampling,
    stats: CallStats,
}

impl<B: ChatBackend> ChatTeacher<B> {
    /// The teacher `backend` with `sampling`.
    pub fn new(backend: B, sampling: TeacherSampling) -> Self {
        Self {
            backend,
            sampling,
            stats: CallStats::default(),
        }
    }

    fn messages(&self, user: String) -> Vec<ChatMessage> {
        let mut m = Vec::with_capacity(2);
        if let Some(s) = &self.sampling.system {
            m.push(ChatMessage::system(s.clone()));
        }
        m.push(ChatMessage::user(user));
        m
    }

    fn answer_sampling(&self) -> Sampling {
        Sampling {
            temperature: self.sampling.temperature,
            top_p: self.sampling.top_p,
            max_tokens: self.sampling.max_new_tokens,
            seed: 0,
        }
    }
}

impl<B: ChatBackend> Teacher for ChatTeacher<B> {
    fn respond(&mut self, instructions: &[String]) -> Result<Replies> {
        let requests: Vec<ChatRequest> = instructions
            .iter()
            .map(|i| ChatRequest {
                messages: self.messages(i.clone()),
                sampling: self.answer_sampling(),
            })
            .collect();
        let doing = format!("answering {} instructions", requests.len());
        send(&self.backend, "teacher", doing, &requests, &mut self.stats)
    }

    fn expand(&mut self, requests: &[ExpandRequest]) -> Result<Replies> {
        let chat: Vec<ChatRequest> = requests
            .iter()
            .map(|r| ChatRequest {
                messages: self.messages(expansion_prompt(&r.seed, r.category)),
                sampling: Sampling {
                    temperature: self.sampling.expand_temperature,
                    top_p: self.sampling.top_p,
                    max_tokens: self.sampling.expand_max_new_tokens,
                    seed: r.draw,
                },
            })
            .collect();
        let doing = format!("writing {} new instructions", chat.len());
        send(&self.backend, "teacher", doing, &chat, &mut self.stats)
    }

    fn refine(&mut self, requests: &[RefineRequest]) -> Result<Replies> {
        let chat: Vec<ChatRequest> = requests
            .iter()
            .map(|r| ChatRequest {
                messages: self.messages(refinement_prompt(&r.instruction, &r.response, r.category)),
                sampling: self.answer_sampling(),
            })
            .collect();
        let doing = format!("refining {} responses", chat.len());
        send(&self.backend, "teacher", doing, &chat, &mut self.stats)
    }

    fn stats(&self) -> CallStats {
        self.stats
    }
}

/// A [`Judge`] over a chat backend (Lion's referee prompt with tagged scores).
#[derive(Debug)]
pub struct ChatJudge<B> {
    backend: B,
    sampling: JudgeSampling,
    stats: CallStats,
}

impl<B: ChatBackend> ChatJudge<B> {
    /// The judge `backend` with `sampling`.
    pub fn new(backend: B, sampling: JudgeSampling) -> Self {
        Self {
            backend,
            sampling,
            stats: CallStats::default(),
        }
    }

    /// The chat request of one judgement (also used to show what was sent).
    pub fn request(&self, r: &JudgeRequest) -> ChatRequest {
        let mut prompt = judge_prompt(
            &r.instruction,
            &r.answer_1,
            &r.answer_2,
            self.sampling.explain,
        );
        let temperature = if r.attempt == 0 {
            self.sampling.temperature
        } else {
            prompt.push_str(JUDGE_REMINDER);
            self.sampling.reask_temperature
        };
        ChatRequest {
            messages: vec![ChatMessage::system(JUDGE_SYSTEM), ChatMessage::user(prompt)],
            sampling: Sampling {
                temperature,
                top_p: 1.0,
                max_tokens: self.sampling.max_new_tokens,
                seed: r.attempt as u64,
            },
        }
    }
}

impl<B: ChatBackend> Judge for ChatJudge<B> {
    fn judge(&mut self, requests: &[JudgeRequest]) -> Result<Replies> {
        let chat: Vec<ChatRequest> = requests.iter().map(|r| self.request(r)).collect();
        let doing = format!("judging {} answer pairs", chat.len());
        send(&self.backend, "judge", doing, &chat, &mut self.stats)
    }

    fn stats(&self) -> CallStats {
        self.stats
    }
}

/// A [`TaskClassifier`] over a chat backend (easydistill's prompt, greedy).
#[derive(Debug)]
pub struct ChatClassifier<B> {
    backend: B,
    sampling: ClassifierSampling,
    stats: CallStats,
}

impl<B: ChatBackend> ChatClassifier<B> {
    /// The classifier `backend` with `sampling`.
    pub fn new(backend: B, sampling: ClassifierSampling) -> Self {
        Self {
            backend,
            sampling,
            stats: CallStats::default(),
        }
    }
}

impl<B: ChatBackend> TaskClassifier for ChatClassifier<B> {
    fn classify(&mut self, instructions: &[String]) -> Result<Replies> {
        let chat: Vec<ChatRequest> = instructions
            .iter()
            .map(|i| ChatRequest {
                messages: vec![ChatMessage::user(self.sampling.prompt.render(i))],
                sampling: Sampling::greedy(self.sampling.max_new_tokens),
            })
            .collect();
        let doing = format!("classifying {} instructions", chat.len());
        send(&self.backend, "classifier", doing, &chat, &mut self.stats)
    }

    fn stats(&self) -> CallStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::chat::{CallFailure, Reply};
    use crate::taxonomy::TaskCategory;

    /// Echoes the last user turn's first line and records every request.
    #[derive(Default)]
    struct Echo {
        seen: Mutex<Vec<ChatRequest>>,
        fail_all: bool,
    }

    impl ChatBackend for Echo {
        fn describe(&self) -> String {
            "echo".into()
        }

        fn complete(&self, requests: &[ChatRequest]) -> Result<Replies> {
            if self.fail_all {
                return Err(TapirError::Input {
                    what: "echo".into(),
                    detail: "connection refused".into(),
                });
            }
            self.seen.lock().unwrap().extend_from_slice(requests);
            Ok(requests
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    if r.messages.last().unwrap().content == "fail" {
                        Err(CallFailure {
                            detail: "500".into(),
                        })
                    } else {
                        Ok(Reply {
                            cached: i == 2,
                            ..Reply::new(r.messages.last().unwrap().content.lines().next().unwrap())
                        })
                    }
                })
                .collect())
        }
    }

    #[test]
    fn the_teacher_renders_its_prompts_and_counts_calls() {
        let backend = Echo::default();
        let mut t = ChatTeacher::new(
            &backend,
            TeacherSampling {
                system: Some("be brief".into()),
                ..TeacherSampling::default()
            },
        );
        let r = t
            .respond(&["hi".into(), "fail".into(), "there".into()])
            .unwrap();
        assert_eq!(r[0].as_ref().unwrap().text, "hi");
        assert!(r[1].is_err());
        assert_eq!(
            t.stats(),
            CallStats {
                made: 1,
                cached: 1,
                failed: 1
            }
        );
        t.expand(&[ExpandRequest {
            seed: "s".into(),
            category: TaskCategory::Math,
            draw: 7,
        }])
        .unwrap();
        t.refine(&[RefineRequest {
            instruction: "q".into(),
            response: "r".into(),
            category: TaskCategory::CodeDebug,
        }])
        .unwrap();
        let seen = backend.seen.lock().unwrap();
        assert_eq!(seen[0].messages[0], ChatMessage::system("be brief"));
        assert_eq!(seen[0].sampling.temperature, 0.0);
        assert_eq!(seen[3].sampling.seed, 7);
        assert_eq!(seen[3].sampling.temperature, 1.0);
        assert!(seen[3].messages[1].content.contains("\"Math\""));
        assert!(seen[4].messages[1].content.contains("corrected code"));
    }

    #[test]
    fn a_reask_adds_the_reminder_and_samples_differently() {
        let backend = Echo::default();
        let j = ChatJudge::new(&backend, JudgeSampling::default());
        let mut r = JudgeRequest {
            instruction: "q".into(),
            answer_1: "a".into(),
            answer_2: "b".into(),
            attempt: 0,
        };
        let first = j.request(&r);
        r.attempt = 2;
        let again = j.request(&r);
        assert_eq!(first.sampling.temperature, 0.0);
        assert_eq!(again.sampling.temperature, 0.2);
        assert_ne!(first.sampling.seed, again.sampling.seed);
        assert!(!first.messages[1].content.contains("Important:"));
        assert!(again.messages[1].content.contains("Important:"));
        assert_eq!(first.messages[0].content, JUDGE_SYSTEM);
    }

    #[test]
    fn a_failing_backend_names_the_role_and_where_it_runs() {
        let backend = Echo {
            fail_all: true,
            ..Echo::default()
        };
        let mut c = ChatClassifier::new(&backend, ClassifierSampling::default());
        let e = c.classify(&["x".into()]).unwrap_err().to_string();
        assert!(
            e.contains("classifier (echo)") && e.contains("connection refused"),
            "{e}"
        );
        // nothing to send: no call
        assert!(c.classify(&[]).unwrap().is_empty());
    }
}
