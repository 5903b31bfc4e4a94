//! The prompts TAPIR sends, in one place.
//!
//! - Judge: Lion's referee prompt (`YJiangcm/Lion:src/chatgpt_referee.py`, after Vicuna's),
//!   with the two final score lines in MT-Bench's `[[x]]` tags so they parse unambiguously
//!   ([`crate::judge_parse`]); system turn "You are a helpful and precise assistant for checking
//!   the quality of the answer." as Lion's.
//! - Expansion: Lion's hard-instruction prompt (`src/prompt_hard.txt`) with the sampled task
//!   category added (TAPIR samples the category from the target mix) and the answer wrapped in
//!   `<answer>` tags as easydistill's `expansion_prompt.txt`.
//! - Refinement: one guidance line per [`CategoryGroup`] (ALGORITHMS.md section 3(c); the
//!   paper's own prompts were not published).
//! - Classifier: [`crate::taxonomy::classifier_prompt`] (easydistill's).

use crate::taxonomy::{CategoryGroup, TaskCategory};

/// Lion's referee system turn.
pub const JUDGE_SYSTEM: &str =
    "You are a helpful and precise assistant for checking the quality of the answer.";

/// The pairwise judge prompt (Lion's, with tagged scores). With `explain = false` the judge is
/// asked for the two score lines only (cheaper for small local judges; Lion asks for the
/// explanation first).
pub fn judge_prompt(instruction: &str, answer_1: &str, answer_2: &str, explain: bool) -> String {
    let (how, format) = if explain {
        (
            "Please first provide a brief explanation of your evaluation, avoiding any potential bias and ensuring that the order in which the responses were presented does not affect your judgment. Then, output two lines indicating the scores for Assistant 1 and 2, respectively, each score inside double brackets.",
            "Evaluation evidence: <your evaluation explanation here>\n",
        )
    } else {
        (
            "Avoid any potential bias and ensure that the order in which the responses were presented does not affect your judgment. Do not explain: output only two lines indicating the scores for Assistant 1 and 2, respectively, each score inside double brackets.",
            "",
        )
    };
    format!(
        "[Instruction]\n{instruction}\n\n[The Start of Assistant 1's Answer]\n{answer_1}\n[The End of Assistant 1's Answer]\n\n[The Start of Assistant 2's Answer]\n{answer_2}\n[The End of Assistant 2's Answer]\n\n[System]\n\
We would like to request your feedback on the performance of two AI assistants in response to the user instruction displayed above.\n\n\
Please rate the helpfulness, relevance, accuracy, level of details of their responses. Each assistant receives an overall score on a scale of 1 to 10, where a higher score indicates better overall performance.\n\n\
{how}\n\n\
Output with the following format:\n\
{format}Score of the Assistant 1: [[<score>]]\n\
Score of the Assistant 2: [[<score>]]\n"
    )
}

/// Appended to the judge prompt when an earlier answer had no parsable scores.
pub const JUDGE_REMINDER: &str = "\nImportant: your previous answer did not end with the two score lines. End your answer with exactly these two lines, each score a number from 1 to 10 inside double brackets:\nScore of the Assistant 1: [[<score>]]\nScore of the Assistant 2: [[<score>]]";

/// The expansion prompt: a new instruction of category `category` inspired by `seed`.
///
/// Lion's prompt ends with the seed; small local teachers then answer the seed instead of
/// writing a new instruction (Qwen2.5-Coder-0.5B did for 8 of 9 requests, docs/tapir.md), so
/// the request is restated after it.
pub fn expansion_prompt(seed: &str, category: TaskCategory) -> String {
    format!(
        "I want you to act as an Instruction Creator.\n\
Your goal is to draw inspiration from the #Given Instruction# to create a brand new instruction.\n\
This new instruction should belong to the task category \"{category}\" and be as difficult as the #Given Instruction# or harder.\n\
The LENGTH and difficulty level of the #Created Instruction# should be similar to that of the #Given Instruction#.\n\
The #Created Instruction# must be reasonable and must be understood and responded to by humans.\n\
'#Given Instruction#', '#Created Instruction#', 'given instruction' and 'created instruction' are not allowed to appear in #Created Instruction#.\n\n\
#Given Instruction#:\n{seed}\n\n\
Do not answer the #Given Instruction#. Write one brand new instruction of the task category \"{category}\", different in content, wrapped in <answer></answer> tags, and nothing else."
    )
}

/// The refinement guidance of a category group.
pub fn refinement_guidance(group: CategoryGroup) -> &'static str {
    match group {
        CategoryGroup::Math => {
            "Solve the problem step by step, showing each computation, and finish with the final answer on its own line, marked \"Final answer:\"."
        }
        CategoryGroup::Reasoning => {
            "Lay out the chain of reasoning explicitly, one step per line, before stating the conclusion."
        }
        CategoryGroup::CodeGeneration => {
            "Give complete, runnable code in a fenced code block, with comments, followed by a short explanation of the approach and its complexity."
        }
        CategoryGroup::CodeDebug => {
            "Locate and explain the bug or bugs, then give the corrected code in a fenced code block and say why it fixes the problem."
        }
        CategoryGroup::Creative => {
            "Make the response richer and well structured, stay in the requested persona or style, and satisfy every stated constraint."
        }
        CategoryGroup::Knowledge => {
            "Make the response accurate and well organised (headings or bullet points where they help), and cover the key caveats."
        }
        CategoryGroup::Format => "Follow the requested format exactly, with no extra commentary.",
        CategoryGroup::Safety => {
            "Give a safe and helpful answer: a brief, polite refusal with a safer alternative when the request is harmful, otherwise a balanced answer."
        }
        CategoryGroup::Others => {
            "Make the response more detailed and more helpful than the original."
        }
    }
}

/// The task-aware refinement prompt for one item. The request is restated after the response,
/// for the same reason as in [`expansion_prompt`]: small local teachers otherwise comment on the
/// response instead of rewriting it.
pub fn refinement_prompt(instruction: &str, response: &str, category: TaskCategory) -> String {
    let guidance = refinement_guidance(category.group());
    format!(
        "Below are an instruction and a response to it. Rewrite the response to make it better. {guidance}\n\
Keep what is correct in the original response and fix what is wrong.\n\n\
#Instruction#:\n{instruction}\n\n#Response#:\n{response}\n\n\
Now write the improved response to the #Instruction# ({guidance_short}). Reply with the improved response only, without any preamble or comment on the original.",
        guidance_short = guidance.trim_end_matches('.').to_lowercase()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_carry_their_inputs_and_formats() {
        let j = judge_prompt("Q?", "A1", "A2", true);
        assert!(j.contains("Evaluation evidence"));
        assert!(!judge_prompt("Q?", "A1", "A2", false).contains("Evaluation evidence"));
        assert!(j.starts_with("[Instruction]\nQ?\n"));
        assert!(
            j.contains("Assistant 1's Answer]\nA1\n") && j.contains("Assistant 2's Answer]\nA2\n")
        );
        assert!(
            j.trim_end()
                .ends_with("Score of the Assistant 2: [[<score>]]")
        );
        let e = expansion_prompt("Add 2 and 3.", TaskCategory::CodeDebug);
        assert!(e.contains("\"Code Debug\"") && e.contains("#Given Instruction#:\nAdd 2 and 3.\n"));
        assert!(e.ends_with("and nothing else."));
        let r = refinement_prompt("Q", "R", TaskCategory::Math);
        assert!(r.contains("step by step") && r.contains("#Response#:\nR\n"));
        assert!(r.ends_with("comment on the original."));
        let r = refinement_prompt("Q", "R", TaskCategory::Law);
        assert!(r.contains("caveats"));
    }
}
