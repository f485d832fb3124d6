//! Okapi BM25 over the prompt pool, the lexical baseline of §6.5 (BM25-K).
//!
//! `score(q, d) = Σ_{t ∈ q} idf(t) · tf(t, d)·(k1 + 1) / (tf(t, d) + k1·(1 − b + b·|d| / avgdl))`
//! with Lucene's non-negative `idf(t) = ln(1 + (N − df(t) + 0.5) / (df(t) + 0.5))`; a query
//! term counts once per occurrence in the query. Tokens are lowercased alphanumeric runs.

use std::collections::HashMap;

pub struct Bm25 {
    k1: f64,
    b: f64,
    /// Per document: term → count.
    docs: Vec<HashMap<String, u32>>,
    lens: Vec<usize>,
    avgdl: f64,
    df: HashMap<String, u32>,
}

/// Lowercased runs of letters and digits.
pub fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).map(str::to_lowercase).collect()
}

impl Bm25 {
    /// The usual k1 = 1.5, b = 0.75 (rank_bm25's defaults).
    pub fn new(docs: &[&str]) -> Bm25 {
        Bm25::with_params(docs, 1.5, 0.75)
    }

    pub fn with_params(docs: &[&str], k1: f64, b: f64) -> Bm25 {
        let mut df: HashMap<String, u32> = HashMap::new();
        let mut counts = Vec::with_capacity(docs.len());
        let mut lens = Vec::with_capacity(docs.len());
        for d in docs {
            let toks = tokenize(d);
            lens.push(toks.len());
            let mut c: HashMap<String, u32> = HashMap::new();
            for t in toks {
                *c.entry(t).or_default() += 1;
            }
            for t in c.keys() {
                *df.entry(t.clone()).or_default() += 1;
            }
            counts.push(c);
        }
        let avgdl = lens.iter().sum::<usize>() as f64 / lens.len().max(1) as f64;
        Bm25 { k1, b, docs: counts, lens, avgdl, df }
    }

    pub fn idf(&self, term: &str) -> f64 {
        let n = self.docs.len() as f64;
        let df = self.df.get(term).copied().unwrap_or(0) as f64;
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
    }

    /// The score of every document for `query`.
    pub fn scores(&self, query: &str) -> Vec<f64> {
        let terms = tokenize(query);
        let idf: Vec<f64> = terms.iter().map(|t| self.idf(t)).collect();
        self.docs
            .iter()
            .zip(&self.lens)
            .map(|(doc, &len)| {
                let norm = self.k1 * (1.0 - self.b + self.b * len as f64 / self.avgdl.max(1e-12));
                terms
                    .iter()
                    .zip(&idf)
                    .map(|(t, idf)| {
                        let tf = doc.get(t).copied().unwrap_or(0) as f64;
                        idf * tf * (self.k1 + 1.0) / (tf + norm)
                    })
                    .sum()
            })
            .collect()
    }

    /// The `k` best documents, best first, ties to the lower index.
    pub fn top_k(&self, query: &str, k: usize) -> Vec<(usize, f64)> {
        let mut s: Vec<(usize, f64)> = self.scores(query).into_iter().enumerate().collect();
        s.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        s.truncate(k);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_match_a_hand_computation() {
        // Three documents, lengths 3, 2, 4 → avgdl 3.
        let docs = ["the cat sat", "cat cat", "a dog sat down"];
        let bm = Bm25::with_params(&docs, 1.5, 0.75);
        // df(cat) = 2, df(sat) = 2, df(dog) = 1, N = 3.
        let idf2 = (1.0f64 + (3.0 - 2.0 + 0.5) / 2.5).ln(); // ln 1.6
        let idf1 = (1.0f64 + (3.0 - 1.0 + 0.5) / 1.5).ln(); // ln (8/3)
        assert!((bm.idf("cat") - 1.6f64.ln()).abs() < 1e-12 && (idf1 - (8.0f64 / 3.0).ln()).abs() < 1e-12);
        let term = |tf: f64, len: f64| tf * 2.5 / (tf + 1.5 * (0.25 + 0.75 * len / 3.0));
        let s = bm.scores("Cat, sat? dog!");
        let want = [
            idf2 * term(1.0, 3.0) + idf2 * term(1.0, 3.0),       // cat, sat
            idf2 * term(2.0, 2.0),                               // cat twice
            idf2 * term(1.0, 4.0) + idf1 * term(1.0, 4.0),       // sat, dog
        ];
        for (g, w) in s.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{s:?} vs {want:?}");
        }
        // Numbers by hand for document 1: 2·2.5 / (2 + 1.5·(0.25 + 0.5)) = 5 / 3.125 = 1.6.
        assert!((s[1] - 1.6f64.ln() * 1.6).abs() < 1e-12);
        assert_eq!(bm.top_k("cat", 2).iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 0]);
        assert_eq!(bm.scores("zebra"), vec![0.0; 3]);
    }
}
