//! Task-aware response refinement: the teacher rewrites each training response with the
//! refinement prompt of its category group ([`crate::prompts::refinement_prompt`]).
//!
//! A refinement that failed or came back empty keeps the original response (counted, never
//! silently): training on an empty target would teach the student to say nothing. A reply
//! that repeats the prompt's `#Response#:` label has it removed.

use serde::{Deserialize, Serialize};

use crate::error::{Result, TapirError};
use crate::roles::{RefineRequest, Teacher};

/// One refined response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refined {
    /// The response to train on: the refinement, or the original when it failed.
    pub response: String,
    /// Whether the refinement was used.
    pub refined: bool,
    /// Why the original was kept.
    pub kept_because: Option<String>,
}

/// Refines every request (see the module docs).
///
/// # Errors
/// The teacher's error when it cannot work at all.
pub fn refine_responses(
    teacher: &mut dyn Teacher,
    requests: &[RefineRequest],
) -> Result<Vec<Refined>> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let replies = teacher.refine(requests)?;
    if replies.len() != requests.len() {
        return Err(TapirError::ReplyCount {
            role: "teacher".into(),
            expected: requests.len(),
            found: replies.len(),
        });
    }
    Ok(requests
        .iter()
        .zip(replies)
        .map(|(req, reply)| {
            let keep = |why: String| Refined {
                response: req.response.clone(),
                refined: false,
                kept_because: Some(why),
            };
            match reply {
                Err(f) => keep(format!("the refinement call failed: {f}")),
                Ok(r) => {
                    let text = r.text.trim();
                    let text = text.strip_prefix("#Response#:").unwrap_or(text).trim();
                    if text.is_empty() {
                        keep("the refinement was empty".into())
                    } else {
                        Refined {
                            response: text.to_string(),
                            refined: true,
                            kept_because: None,
                        }
                    }
                }
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{CallFailure, Replies, Reply};
    use crate::roles::ExpandRequest;
    use crate::taxonomy::TaskCategory;

    struct T;
    impl Teacher for T {
        fn respond(&mut self, _: &[String]) -> Result<Replies> {
            unreachable!()
        }
        fn expand(&mut self, _: &[ExpandRequest]) -> Result<Replies> {
            unreachable!()
        }
        fn refine(&mut self, r: &[RefineRequest]) -> Result<Replies> {
            Ok(r.iter()
                .map(|x| match x.instruction.as_str() {
                    "fail" => Err(CallFailure {
                        detail: "500".into(),
                    }),
                    "empty" => Ok(Reply::new("  ")),
                    _ => Ok(Reply::new(format!("#Response#: better {}", x.response))),
                })
                .collect())
        }
    }

    #[test]
    fn failed_and_empty_refinements_keep_the_original() {
        let req = |i: &str| RefineRequest {
            instruction: i.into(),
            response: "orig".into(),
            category: TaskCategory::Math,
        };
        let out = refine_responses(&mut T, &[req("ok"), req("fail"), req("empty")]).unwrap();
        assert_eq!(out[0].response, "better orig");
        assert!(out[0].refined);
        assert_eq!(out[1].response, "orig");
        assert!(out[1].kept_because.as_deref().unwrap().contains("500"));
        assert_eq!(
            out[2].kept_because.as_deref(),
            Some("the refinement was empty")
        );
    }
}
