//! Near-duplicate checks for new instructions: ROUGE-L (Lion, Self-Instruct) or embedding
//! cosine similarity.
//!
//! [`rouge_l`] is the F-measure of the longest common subsequence of the two token sequences,
//! as Google's `rouge_score` computes `rougeL` without stemming (what Lion's
//! `generate_hard_instruction.py` and Self-Instruct use): text lower-cased, every run of
//! characters other than `a-z0-9` a separator, `F = 2PR / (P + R)` with `P = lcs / |candidate|`,
//! `R = lcs / |reference|`. Lion drops a new instruction whose maximum ROUGE-L against the pool
//! is above 0.7.
//!
//! [`EmbeddingSimilarity`] uses any [`TextEmbedder`] (the facade's lm-core sentence encoder)
//! and cosine similarity; pool embeddings are computed once and extended as instructions are
//! accepted.

use crate::error::Result;

/// Lower-cased alphanumeric tokens (`rouge_score`'s default tokenizer without stemming).
pub fn rouge_tokens(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

fn lcs(a: &[String], b: &[String]) -> usize {
    if a.is_empty() || b.is_empty() {
        return 0;
    }
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                cur[j].max(prev[j + 1])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// ROUGE-L F-measure between two token sequences (0 when either is empty).
pub fn rouge_l_tokens(candidate: &[String], reference: &[String]) -> f64 {
    let l = lcs(candidate, reference) as f64;
    if l == 0.0 {
        return 0.0;
    }
    let p = l / candidate.len() as f64;
    let r = l / reference.len() as f64;
    2.0 * p * r / (p + r)
}

/// ROUGE-L F-measure between two texts (see the module docs).
pub fn rouge_l(candidate: &str, reference: &str) -> f64 {
    rouge_l_tokens(&rouge_tokens(candidate), &rouge_tokens(reference))
}

/// Texts to vectors, for [`EmbeddingSimilarity`].
pub trait TextEmbedder {
    /// One vector per text, all of one length.
    ///
    /// # Errors
    /// When the embedding model fails.
    fn embed(&mut self, texts: &[String]) -> Result<Vec<Vec<f32>>>;
}

/// Greedy near-duplicate filtering against a growing pool.
pub trait NearDuplicates {
    /// The highest similarity of `candidate` to any text added so far (0 when none).
    ///
    /// # Errors
    /// When an embedding model fails.
    fn max_similarity(&mut self, candidate: &str) -> Result<f64>;

    /// Adds texts to the pool.
    ///
    /// # Errors
    /// When an embedding model fails.
    fn add(&mut self, texts: &[String]) -> Result<()>;

    /// The name of the measure, for reports (`rouge-l`, `embedding`).
    fn name(&self) -> &'static str;
}

/// ROUGE-L against every pool text.
#[derive(Debug, Clone, Default)]
pub struct RougeL {
    pool: Vec<Vec<String>>,
}

impl NearDuplicates for RougeL {
    fn max_similarity(&mut self, candidate: &str) -> Result<f64> {
        let c = rouge_tokens(candidate);
        Ok(self
            .pool
            .iter()
            .map(|p| rouge_l_tokens(&c, p))
            .fold(0.0, f64::max))
    }

    fn add(&mut self, texts: &[String]) -> Result<()> {
        self.pool.extend(texts.iter().map(|t| rouge_tokens(t)));
        Ok(())
    }

    fn name(&self) -> &'static str {
        "rouge-l"
    }
}

/// Cosine similarity of embeddings against every pool text.
pub struct EmbeddingSimilarity<E> {
    embedder: E,
    pool: Vec<Vec<f32>>,
}

impl<E: TextEmbedder> EmbeddingSimilarity<E> {
    /// An empty pool embedded by `embedder`.
    pub fn new(embedder: E) -> Self {
        Self {
            embedder,
            pool: Vec::new(),
        }
    }
}

fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let n = v
        .iter()
        .map(|x| (*x as f64) * (*x as f64))
        .sum::<f64>()
        .sqrt();
    if n > 1e-8 {
        v.iter_mut().for_each(|x| *x = (*x as f64 / n) as f32);
    }
    v
}

impl<E: TextEmbedder> NearDuplicates for EmbeddingSimilarity<E> {
    fn max_similarity(&mut self, candidate: &str) -> Result<f64> {
        let v = self.embedder.embed(&[candidate.to_string()])?;
        let Some(v) = v.into_iter().next().map(normalised) else {
            return Ok(0.0);
        };
        Ok(self
            .pool
            .iter()
            .map(|p| {
                p.iter()
                    .zip(&v)
                    .map(|(a, b)| (*a as f64) * (*b as f64))
                    .sum::<f64>()
            })
            .fold(0.0, f64::max))
    }

    fn add(&mut self, texts: &[String]) -> Result<()> {
        if texts.is_empty() {
            return Ok(());
        }
        let vs = self.embedder.embed(texts)?;
        self.pool.extend(vs.into_iter().map(normalised));
        Ok(())
    }

    fn name(&self) -> &'static str {
        "embedding"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rouge_l_matches_rouge_score_on_known_pairs() {
        // rouge_score: scorer.score("the cat sat on the mat", "the cat was on the mat")['rougeL'].fmeasure
        // lcs = the cat on the mat = 5 of 6 and 6 -> 0.8333
        let f = rouge_l("the cat was on the mat", "The cat sat on the mat.");
        assert!((f - 5.0 / 6.0).abs() < 1e-12, "{f}");
        assert_eq!(rouge_l("Add 2 and 3", "add 2 and 3!"), 1.0);
        assert_eq!(rouge_l("", "x"), 0.0);
        assert_eq!(rouge_l("abc", "xyz"), 0.0);
        assert_eq!(
            rouge_tokens("Hello, World-2x"),
            vec!["hello", "world", "2x"]
        );
    }

    #[test]
    fn the_rouge_pool_grows() {
        let mut r = RougeL::default();
        assert_eq!(r.max_similarity("anything").unwrap(), 0.0);
        r.add(&["compute the gcd of 4 and 6".into()]).unwrap();
        assert!(r.max_similarity("compute the gcd of 4 and 8").unwrap() > 0.8);
        assert!(r.max_similarity("write a poem about the sea").unwrap() < 0.3);
    }

    struct Bag;
    impl TextEmbedder for Bag {
        fn embed(&mut self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
            Ok(texts
                .iter()
                .map(|t| {
                    let mut v = vec![0f32; 26];
                    for c in t.bytes().filter(u8::is_ascii_lowercase) {
                        v[(c - b'a') as usize] += 1.0;
                    }
                    v
                })
                .collect())
        }
    }

    #[test]
    fn embedding_similarity_is_cosine() {
        let mut e = EmbeddingSimilarity::new(Bag);
        e.add(&["ab".into()]).unwrap();
        assert!((e.max_similarity("ba").unwrap() - 1.0).abs() < 1e-6);
        assert!(e.max_similarity("cd").unwrap().abs() < 1e-6);
        assert_eq!(e.name(), "embedding");
    }

    proptest! {
        #[test]
        fn rouge_l_is_symmetric_and_bounded(a in "[a-c ]{0,30}", b in "[a-c ]{0,30}") {
            let x = rouge_l(&a, &b);
            prop_assert!((0.0..=1.0).contains(&x));
            prop_assert!((x - rouge_l(&b, &a)).abs() < 1e-12);
            if !rouge_tokens(&a).is_empty() {
                prop_assert!((rouge_l(&a, &a) - 1.0).abs() < 1e-12);
            }
        }
    }
}
