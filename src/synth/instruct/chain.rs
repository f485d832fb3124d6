//! M-round chaining (synth-spec §3.3): texts are synthesized in rounds, and a text of round r
//! sees the texts and pairs of its chain from earlier rounds as few-shot demonstrations.
//!
//! The rule, as in the reference (`get_dataset`, `process_syn_raw_text`):
//!
//! - N texts are cut into M rounds of `ceil(N / M)` texts; round r holds texts
//!   `r·B .. (r+1)·B`. Text j of a round continues chain j of the previous round.
//! - **Prompt.** If the last entry of chain j has pairs, its demonstration
//!   `cook_read(text) + cook_compre(pairs) + "</s>"` is prepended, and so are the entries
//!   before it, walking back while the entry just taken has `inherit_from_prev`. The current
//!   text's `cook_read` follows. If the last entry has no pairs, the text is prompted alone.
//! - **Length guard.** The demonstrations are kept only if `count(demos + cook_read(text))
//!   ≤ budget`, where the budget is `max_model_len − max_new_tokens`; otherwise the text is
//!   prompted alone and starts a new few-shot document. `count` is a closure: the reference
//!   uses [`paper_length_estimate`] (1.5 × the number of `' '`-separated words), a tokenizer
//!   count works too.
//! - **Bookkeeping.** `followed_by_next` on the last entry of chain j records whether it was
//!   actually prepended. The new entry gets `inherit_from_prev = followed_by_next(previous)
//!   && it has pairs`. Consecutive inheriting entries form one pre-training document.
//! - **Leftover chains.** When the previous round had more chains than this round has texts,
//!   the extra chains get `followed_by_next = false` and are put in front of the chains of
//!   this round's texts, so they are not lost. The reference puts leftover k in front of text
//!   k and fails when there are more leftovers than texts (7 texts in 3 rounds: 3, 3, 1);
//!   retort deals them round-robin (leftover k to text k mod n), in their order, which is the
//!   same whenever the reference works.
//! - Rounds with no texts (when `(r·B) ≥ N`) are skipped.
//!
//! [`Chainer`] is a state machine for a batched generator: [`Chainer::prompts`] gives the
//! current round's prompts, [`Chainer::submit`] takes the generated outputs (parsed with
//! [`parse_pairs`]) and moves to the next round; after the last round [`Chainer::into_chains`]
//! gives one chain per text of the last non-empty round.

use std::ops::Range;

use super::format::{cook_demo, cook_read, parse_pairs, ParseFailure, QaPair};

/// One synthesized text in a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Index of the text in the input.
    pub id: usize,
    /// Round (0-based) in which it was synthesized.
    pub round: usize,
    pub context: String,
    pub pairs: Vec<QaPair>,
    /// It was synthesized after the previous entry of the chain, and has pairs.
    pub inherit_from_prev: bool,
    /// It was prepended when the next entry of the chain was synthesized.
    pub followed_by_next: bool,
}

/// Entries in the order they were chained; inheriting runs form few-shot documents.
pub type Chain = Vec<Entry>;

/// The reference's length estimate: `len(s.split(" ")) * 1.5`, rounded up. Against an integer
/// budget, rounding up changes no comparison.
pub fn paper_length_estimate(s: &str) -> usize {
    (s.split(' ').count() * 3).div_ceil(2)
}

/// The room for the prompt: `max_model_len − max_new_tokens` (README: 4096 − 400).
pub fn prompt_budget(max_model_len: usize, max_new_tokens: usize) -> usize {
    max_model_len.saturating_sub(max_new_tokens)
}

/// The demonstrations chain `chain` contributes to the next prompt, before the length guard:
/// empty if its last entry has no pairs.
pub fn demonstrations(chain: &[Entry]) -> String {
    let Some(last) = chain.last() else {
        return String::new();
    };
    if last.pairs.is_empty() {
        return String::new();
    }
    let mut start = chain.len() - 1;
    while start > 0 && chain[start].inherit_from_prev {
        start -= 1;
    }
    chain[start..]
        .iter()
        .map(|e| cook_demo(&e.context, &e.pairs))
        .collect()
}

/// What one round produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoundReport {
    pub round: usize,
    /// Pairs kept per text of the round, in order.
    pub pairs_per_text: Vec<usize>,
    /// Every dropped piece of every output of the round.
    pub failures: Vec<ParseFailure>,
}

/// Drives M-round synthesis; see the module doc.
pub struct Chainer<F> {
    texts: Vec<String>,
    rounds: usize,
    per_round: usize,
    budget: usize,
    count_tokens: F,
    /// The current round (== `rounds` when done).
    round: usize,
    /// Chains after the previous round; their last entries' `followed_by_next` is set for the
    /// current round.
    chains: Vec<Chain>,
    prompts: Vec<String>,
}

impl<F: Fn(&str) -> usize> Chainer<F> {
    /// `rounds` ≥ 1; `budget` is [`prompt_budget`]; `count_tokens` measures a prompt.
    pub fn new(texts: Vec<String>, rounds: usize, budget: usize, count_tokens: F) -> Self {
        assert!(rounds >= 1, "instruct chaining needs at least one round");
        let per_round = texts.len().div_ceil(rounds);
        let mut chainer = Chainer {
            texts,
            rounds,
            per_round,
            budget,
            count_tokens,
            round: 0,
            chains: Vec::new(),
            prompts: Vec::new(),
        };
        chainer.start_round();
        chainer
    }

    /// The current round, 0-based.
    pub fn round(&self) -> usize {
        self.round
    }

    pub fn is_done(&self) -> bool {
        self.round >= self.rounds
    }

    /// Indices (into the input texts) of the current round's texts.
    pub fn text_ids(&self) -> Range<usize> {
        let start = (self.round * self.per_round).min(self.texts.len());
        let end = ((self.round + 1) * self.per_round).min(self.texts.len());
        start..end
    }

    /// The prompts of the current round, one per text of [`Chainer::text_ids`]; empty when done.
    pub fn prompts(&self) -> &[String] {
        &self.prompts
    }

    /// The chains so far (after the last submitted round).
    pub fn chains(&self) -> &[Chain] {
        &self.chains
    }

    pub fn into_chains(self) -> Vec<Chain> {
        self.chains
    }

    /// Takes the synthesizer's outputs for [`Chainer::prompts`] (same order and number),
    /// appends the parsed entries to their chains and prepares the next round.
    pub fn submit(&mut self, outputs: &[String]) -> RoundReport {
        assert!(!self.is_done(), "submit after the last round");
        assert_eq!(outputs.len(), self.prompts.len(), "one output per prompt");
        let ids = self.text_ids();
        let n = ids.len();
        let mut previous = std::mem::take(&mut self.chains).into_iter();
        let mut next: Vec<Chain> = (&mut previous).take(n).collect();
        next.resize_with(n, Vec::new);
        // Leftovers: round-robin in front of the current texts' chains, in order.
        let mut fronts: Vec<Chain> = vec![Vec::new(); n];
        for (k, leftover) in previous.enumerate() {
            fronts[k % n].extend(leftover);
        }
        let mut report = RoundReport {
            round: self.round,
            ..Default::default()
        };
        for (((id, output), chain), front) in ids.zip(outputs).zip(&mut next).zip(fronts) {
            let parsed = parse_pairs(output);
            report.pairs_per_text.push(parsed.pairs.len());
            report.failures.extend(parsed.failures);
            let inherit =
                chain.last().is_some_and(|e| e.followed_by_next) && !parsed.pairs.is_empty();
            let entry = Entry {
                id,
                round: self.round,
                context: self.texts[id].clone(),
                pairs: parsed.pairs,
                inherit_from_prev: inherit,
                followed_by_next: false,
            };
            let mut whole = front;
            whole.append(chain);
            whole.push(entry);
            *chain = whole;
        }
        self.chains = next;
        self.round += 1;
        self.start_round();
        report
    }

    /// Skips empty rounds, then builds the prompts of the current round and sets
    /// `followed_by_next` on the chains it continues (leftovers get `false`).
    fn start_round(&mut self) {
        while !self.is_done() && self.text_ids().is_empty() {
            self.round += 1;
        }
        self.prompts.clear();
        if self.is_done() {
            return;
        }
        let ids = self.text_ids();
        for chain in &mut self.chains {
            if let Some(last) = chain.last_mut() {
                last.followed_by_next = false;
            }
        }
        for (j, id) in ids.enumerate() {
            let read = cook_read(&self.texts[id]);
            let Some(chain) = self.chains.get_mut(j) else {
                self.prompts.push(read);
                continue;
            };
            let demos = demonstrations(chain);
            let with_demos = format!("{demos}{read}");
            let fits = !demos.is_empty() && (self.count_tokens)(&with_demos) <= self.budget;
            if let Some(last) = chain.last_mut() {
                last.followed_by_next = fits;
            }
            self.prompts.push(if fits { with_demos } else { read });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("Text {i}.")).collect()
    }

    fn no_limit(_: &str) -> usize {
        0
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Entry ids, inherit and followed flags of a chain.
    fn shape(chain: &[Entry]) -> Vec<(usize, bool, bool)> {
        chain
            .iter()
            .map(|e| (e.id, e.inherit_from_prev, e.followed_by_next))
            .collect()
    }

    #[test]
    fn three_rounds_over_seven_texts_give_hand_derived_prompts() {
        let mut c = Chainer::new(texts(7), 3, 4096 - 400, no_limit);
        // Round 0: texts 0, 1, 2 (B = ceil(7/3) = 3), each alone.
        assert_eq!(c.text_ids(), 0..3);
        assert_eq!(
            c.prompts(),
            strings(&[
                "<s> <CON> Text 0. </CON>\n\n",
                "<s> <CON> Text 1. </CON>\n\n",
                "<s> <CON> Text 2. </CON>\n\n",
            ])
        );
        let r = c.submit(&strings(&[
            "<QUE> What is 0? <ANS> Zero. </END>",
            "nothing useful",
            "<QUE> What is 2? <ANS> Two. </END>\n\n<QUE> what is 2? <ANS> Dup. </END>\n\n<QUE> Even? <ANS> Yes. </END>",
        ]));
        assert_eq!(r.pairs_per_text, vec![1, 0, 2]);
        assert_eq!(
            r.failures,
            vec![ParseFailure::Unterminated, ParseFailure::DuplicateQuestion]
        );

        // Round 1: texts 3, 4, 5. Chain 0 and 2 end in entries with pairs: prepended.
        // Chain 1's text 1 has none: text 4 alone.
        assert_eq!(c.text_ids(), 3..6);
        assert_eq!(
            c.prompts(),
            strings(&[
                "<s> <CON> Text 0. </CON>\n\n<QUE> What is 0? <ANS> Zero. </END></s>\
                 <s> <CON> Text 3. </CON>\n\n",
                "<s> <CON> Text 4. </CON>\n\n",
                "<s> <CON> Text 2. </CON>\n\n<QUE> What is 2? <ANS> Two. </END>\n\n\
                 <QUE> Even? <ANS> Yes. </END></s><s> <CON> Text 5. </CON>\n\n",
            ])
        );
        c.submit(&strings(&[
            "<QUE> What is 3? <ANS> Three. </END>",
            "<QUE> What is 4? <ANS> Four. </END>",
            "<QUE> broken </END>",
        ]));

        // Round 2: text 6 only. Chain 0 is [0, 3] and 3 inherits from 0: both prepended.
        assert_eq!(c.text_ids(), 6..7);
        assert_eq!(
            c.prompts(),
            strings(&[
                "<s> <CON> Text 0. </CON>\n\n<QUE> What is 0? <ANS> Zero. </END></s>\
                       <s> <CON> Text 3. </CON>\n\n<QUE> What is 3? <ANS> Three. </END></s>\
                       <s> <CON> Text 6. </CON>\n\n"
            ])
        );
        c.submit(&strings(&["<QUE> What is 6? <ANS> Six. </END>"]));
        assert!(c.is_done());
        assert!(c.prompts().is_empty());

        // Chains 1 ([1, 4]) and 2 ([2, 5]) were left over: both go in front of text 6's chain.
        let chains = c.into_chains();
        assert_eq!(chains.len(), 1);
        assert_eq!(
            shape(&chains[0]),
            vec![
                (1, false, false), // no pairs, so not prepended in round 1
                (4, false, false), // prompted alone; leftover in round 2
                (2, false, true),  // prepended for text 5
                (5, false, false), // no pairs: does not inherit; leftover
                (0, false, true),
                (3, true, true),
                (6, true, false),
            ]
        );
        assert_eq!(
            chains[0].iter().map(|e| e.round).collect::<Vec<_>>(),
            vec![0, 1, 0, 1, 0, 1, 2]
        );
        assert_eq!(chains[0][6].pairs[0].answer, "Six.");
    }

    #[test]
    fn leftovers_go_in_front_of_the_chain_with_the_same_index() {
        // 5 texts in 2 rounds: 3 then 2; chain 2 is left over and joins text 3's chain (index 0).
        let mut c = Chainer::new(texts(5), 2, 100, no_limit);
        c.submit(&strings(&["<QUE> a <ANS> b </END>"; 3]));
        assert_eq!(c.text_ids(), 3..5);
        c.submit(&strings(&["<QUE> c <ANS> d </END>"; 2]));
        let chains = c.into_chains();
        assert_eq!(
            shape(&chains[0]),
            vec![(2, false, false), (0, false, true), (3, true, false)]
        );
        assert_eq!(shape(&chains[1]), vec![(1, false, true), (4, true, false)]);
    }

    #[test]
    fn length_guard_starts_a_new_chain() {
        // Count = number of BOS markers; budget 2: one demonstration fits, two do not.
        let bos_count = |s: &str| s.matches("<s>").count();
        let mut c = Chainer::new(texts(3), 3, 2, bos_count);
        c.submit(&strings(&["<QUE> q0 <ANS> a0 </END>"]));
        assert_eq!(
            c.prompts(),
            strings(&["<s> <CON> Text 0. </CON>\n\n<QUE> q0 <ANS> a0 </END></s><s> <CON> Text 1. </CON>\n\n"])
        );
        c.submit(&strings(&["<QUE> q1 <ANS> a1 </END>"]));
        // Demos of 0 and 1 plus text 2 would be 3 BOS > 2: text 2 alone.
        assert_eq!(c.prompts(), strings(&["<s> <CON> Text 2. </CON>\n\n"]));
        c.submit(&strings(&["<QUE> q2 <ANS> a2 </END>"]));
        let chains = c.into_chains();
        assert_eq!(
            shape(&chains[0]),
            vec![(0, false, true), (1, true, false), (2, false, false)]
        );
    }

    #[test]
    fn paper_estimate_is_one_and_a_half_per_space_separated_word() {
        assert_eq!(paper_length_estimate("a b c"), 5); // 4.5 rounded up
        assert_eq!(paper_length_estimate("a b"), 3);
        assert_eq!(paper_length_estimate(""), 2); // "".split(" ") has one (empty) word
                                                  // The prompt below splits into 11 pieces on ' ' (newlines do not split): 16.5 → 17.
        let prompt = "<s> <CON> t0 </CON>\n\n<QUE> q <ANS> a </END></s><s> <CON> t1 </CON>\n\n";
        assert_eq!(paper_length_estimate(prompt), 17);
        for (budget, prepended) in [(17, true), (16, false)] {
            let mut c = Chainer::new(strings(&["t0", "t1"]), 2, budget, paper_length_estimate);
            c.submit(&strings(&["<QUE> q <ANS> a </END>"]));
            assert_eq!(c.prompts()[0] == prompt, prepended, "budget {budget}");
        }
        assert_eq!(prompt_budget(4096, 400), 3696);
    }

    #[test]
    fn empty_rounds_are_skipped_and_empty_text_is_just_bos() {
        // 3 texts in 4 rounds: B = 1, round 3 is empty.
        let mut c = Chainer::new(strings(&["", "x", "y"]), 4, 100, no_limit);
        assert_eq!(c.prompts(), strings(&["<s>"]));
        for _ in 0..3 {
            c.submit(&strings(&["<QUE> q <ANS> a </END>"]));
        }
        assert!(c.is_done());
        assert_eq!(c.into_chains()[0].len(), 3);
        let c = Chainer::new(Vec::new(), 2, 100, no_limit);
        assert!(c.is_done());
    }
}
