//! Hand-computed cases of the editing rule (no model), then the prior's pass on a small
//! random decoder: top-k and log-probs against a brute-force log-softmax, and windowing.

use super::*;
use crate::model::{Model, ModelConfig};
use candle_core::Device;

fn ln(p: f64) -> f32 {
    p.ln() as f32
}

/// A position whose top-k are `probs` on ids 0, 1, 2, … (descending), the actual token `actual`
/// with probability `p_actual`.
fn scored(probs: &[f64], actual_p: f64) -> Scored {
    Scored { lp: ln(actual_p), top: probs.iter().enumerate().map(|(i, &p)| (i as u32, ln(p))).collect() }
}

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol, "{what}: {a} vs {b}");
}

/// §1.9: top-8 probabilities [0.995, 0.002, …]; β = 1 keeps the original with 0.995 / 0.9999.
#[test]
fn worked_numbers_of_the_spec() {
    let probs = [0.995, 0.002, 0.001, 0.0008, 0.0005, 0.0003, 0.0002, 0.0001];
    let s = scored(&probs, 0.995);
    let cands = candidates(&s, 0);
    assert_eq!(cands.len(), 8, "the actual token is the top-1: no extra candidate");
    let w1 = draw_weights(&cands, 1.0);
    close(w1[0], 0.99510, 5e-6, "keep-probability at β = 1");
    close(w1[0], 0.995 / 0.9999, 1e-6, "= p renormalised by the top-8 mass");
    let w15 = draw_weights(&cands, 1.5);
    let want = [0.95146, 0.01515, 0.00955, 0.00823, 0.00601, 0.00428, 0.00326, 0.00206];
    for (i, (g, w)) in w15.iter().zip(want).enumerate() {
        close(*g, w, 6e-5, &format!("β = 1.5 weight {i}"));
    }
    // Independently: p^{1/β} / Σ p^{1/β}.
    let z: f64 = probs.iter().map(|p| p.powf(1.0 / 1.5)).sum();
    for (g, p) in w15.iter().zip(probs) {
        close(*g, p.powf(1.0 / 1.5) / z, 1e-6, "p^(1/β) form");
    }
    close(w15.iter().sum::<f64>(), 1.0, 1e-12, "sums to one");
}

/// A forced distribution with the actual token outside the top-k: the candidate set is the
/// top-k plus it, and the draws follow softmax(lp/β) over exactly those.
#[test]
fn candidate_set_and_draw_frequencies_are_the_hand_computed_ones() {
    // Top-2 of a vocabulary: id 0 (0.4), id 1 (0.3); the actual token is id 7 with 0.15.
    let s = Scored { lp: ln(0.15), top: vec![(0, ln(0.4)), (1, ln(0.3))] };
    let cands = candidates(&s, 7);
    assert_eq!(cands.iter().map(|c| c.0).collect::<Vec<_>>(), vec![0, 1, 7]);
    let w = draw_weights(&cands, 1.0);
    for (g, want) in w.iter().zip([0.4 / 0.85, 0.3 / 0.85, 0.15 / 0.85]) {
        close(*g, want, 1e-6, "β = 1 weights");
    }
    // β = 2: √p normalised.
    let w2 = draw_weights(&cands, 2.0);
    let z = 0.4f64.sqrt() + 0.3f64.sqrt() + 0.15f64.sqrt();
    close(w2[2], 0.15f64.sqrt() / z, 1e-6, "β = 2 weight of the actual token");

    // With threshold 0.1 the token (p = 0.15) is eligible: 20,000 draws match the weights.
    let rule = EditRule { threshold: 0.1, ..EditRule::default() };
    let mut rng = Rng::new(5);
    let mut seen = [0usize; 3];
    let n = 20_000;
    for _ in 0..n {
        match decide(&rule, &s, 7, &mut rng) {
            Decision::Resample(0) => seen[0] += 1,
            Decision::Resample(1) => seen[1] += 1,
            Decision::Resample(7) => seen[2] += 1,
            d => panic!("unexpected {d:?}"),
        }
    }
    for (i, want) in w.iter().enumerate() {
        // 4 standard deviations of a binomial proportion.
        let sd = (want * (1.0 - want) / n as f64).sqrt();
        close(seen[i] as f64 / n as f64, *want, 4.0 * sd, &format!("frequency of candidate {i}"));
    }
    // Under the default threshold (0.99) the same position is not eligible and draws nothing.
    let before = rng.clone();
    assert_eq!(decide(&EditRule::default(), &s, 7, &mut rng), Decision::Keep);
    assert_eq!(rng, before, "no draw for a token that is not eligible");
}

/// Which positions are eligible, resampled, kept or dropped under each strategy.
#[test]
fn eligible_set_and_strategies_on_a_forced_document() {
    // Positions 1..=5 (ids 11..=15) with actual-token probabilities 0.999, 0.5, 0.0005, 0.995, 0.002.
    let ps = [0.999, 0.5, 0.0005, 0.995, 0.002];
    let ids = [10u32, 11, 12, 13, 14, 15];
    // The actual token is the top-1 when p > 0.5; otherwise the top-1 is id 99.
    let rows: Vec<Scored> = ps
        .iter()
        .zip(&ids[1..])
        .map(|(&p, &x)| if p > 0.5 { Scored { lp: ln(p), top: vec![(x, ln(p)), (99, ln((1.0 - p) / 2.0))] } } else { Scored { lp: ln(p), top: vec![(99, ln(0.6)), (98, ln(0.2))] } })
        .collect();
    let mut rng = Rng::new(1);
    let up = edit_document(&ids, &rows, &EditRule { top_k: 2, ..EditRule::default() }, &mut rng);
    assert_eq!((up.counts.tokens, up.counts.scored, up.counts.eligible, up.counts.dropped), (6, 5, 2, 0));
    assert_eq!(up.ids.len(), 6);
    for i in [0, 2, 3, 5] {
        assert_eq!(up.ids[i], ids[i], "position {i} is not eligible and stays");
    }
    for i in [1, 4] {
        assert!([ids[i], 99].contains(&up.ids[i]), "position {i} is drawn from its candidates");
    }
    assert_eq!(up.counts.realized as usize, up.edits.len());

    let low = edit_document(&ids, &rows, &EditRule { strategy: Strategy::LowDropUpRevise, top_k: 2, ..EditRule::default() }, &mut Rng::new(1));
    assert_eq!(low.counts.dropped, 1, "only p = 0.0005 is below 0.001");
    assert_eq!(low.ids.len(), 5);
    assert!(!low.ids.contains(&13), "token 13 (p = 0.0005) is deleted");
    assert_eq!((low.ids[0], low.ids[2], low.ids[4]), (10, 12, 15), "the rest stays in order");
    assert!([11, 99].contains(&low.ids[1]) && [14, 99].contains(&low.ids[3]));
    assert!(low.edits.iter().any(|e| e.pos == 3 && e.to.is_none()));

    let filt = edit_document(&ids, &rows, &EditRule { strategy: Strategy::Filtering, top_k: 2, ..EditRule::default() }, &mut Rng::new(1));
    assert_eq!(filt.ids, vec![10, 11, 12, 14, 15], "filtering deletes p < 0.001 and resamples nothing");
    assert_eq!((filt.counts.eligible, filt.counts.realized, filt.counts.dropped), (2, 0, 1), "eligible is reported whatever the strategy");
}

#[test]
fn boundaries_and_position_zero() {
    let s = Scored { lp: ln(0.3), top: vec![(1, ln(0.3)), (2, ln(0.2))] };
    let p = (s.lp as f64).exp();
    // p exactly at the threshold is eligible (p ≥ threshold); exactly at drop_threshold is kept.
    let rule = EditRule { threshold: p, drop_threshold: p, top_k: 2, ..EditRule::default() };
    assert!(matches!(decide(&rule, &s, 1, &mut Rng::new(0)), Decision::Resample(_)));
    let filt = EditRule { strategy: Strategy::Filtering, ..rule };
    assert_eq!(decide(&filt, &s, 1, &mut Rng::new(0)), Decision::Keep);
    let above = EditRule { threshold: p + 1e-9, drop_threshold: p + 1e-9, strategy: Strategy::LowDropUpRevise, ..rule };
    assert_eq!(decide(&above, &s, 1, &mut Rng::new(0)), Decision::Drop);

    // Dropping everything that can be dropped still keeps position 0; empty and one-token
    // documents pass through.
    let all = EditRule { strategy: Strategy::Filtering, drop_threshold: 1.0, ..EditRule::default() };
    let e = edit_document(&[5, 1, 1], &[s.clone(), s.clone()], &all, &mut Rng::new(0));
    assert_eq!(e.ids, vec![5]);
    assert_eq!(edit_document(&[], &[], &all, &mut Rng::new(0)).ids, Vec::<u32>::new());
    assert_eq!(edit_document(&[7], &[], &all, &mut Rng::new(0)).ids, vec![7]);
}

#[test]
fn the_draws_depend_on_the_seed_and_document_only() {
    let rows: Vec<Scored> = (0..200).map(|i| Scored { lp: ln(0.995), top: vec![(i % 3, ln(0.995)), (50, ln(0.004)), (51, ln(0.001))] }).collect();
    let ids: Vec<u32> = std::iter::once(9).chain((0..200).map(|i| i % 3)).collect();
    let rule = EditRule { beta: 3.0, top_k: 3, ..EditRule::default() };
    let a = edit_document(&ids, &rows, &rule, &mut document_rng(42, 7, 1));
    let b = edit_document(&ids, &rows, &rule, &mut document_rng(42, 7, 1));
    assert_eq!(a, b);
    assert!(a.counts.realized > 0, "β = 3 flattens enough to change some of 200 tokens");
    let other_doc = edit_document(&ids, &rows, &rule, &mut document_rng(42, 8, 1));
    let other_gen = edit_document(&ids, &rows, &rule, &mut document_rng(42, 7, 2));
    assert!(other_doc.ids != a.ids && other_gen.ids != a.ids);
}

#[test]
fn summarize_finds_the_top_k_and_the_full_vocabulary_log_prob() {
    let mut rng = Rng::new(3);
    for v in [1usize, 5, 97, 4000] {
        let logits: Vec<f32> = (0..v).map(|_| (rng.f32() - 0.5) * 10.0).collect();
        let actual = (v / 2) as u32;
        for k in [1usize, 3, 8, 200] {
            let s = summarize(&logits, actual, k);
            let lse = logits.iter().map(|&z| (z as f64).exp()).sum::<f64>().ln();
            close(s.lp as f64, logits[actual as usize] as f64 - lse, 1e-5, "lp");
            let mut order: Vec<usize> = (0..v).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
            let want: Vec<u32> = order.iter().take(k.min(v)).map(|&i| i as u32).collect();
            assert_eq!(s.top.iter().map(|t| t.0).collect::<Vec<_>>(), want, "v {v} k {k}");
        }
    }
    // Ties: the smaller id first.
    let s = summarize(&[1.0, 2.0, 2.0, 2.0], 0, 2);
    assert_eq!(s.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
    close((s.lp as f64).exp(), 1f64.exp() / (1f64.exp() + 3.0 * 2f64.exp()), 1e-6, "p");
}

fn tiny_prior() -> Model {
    Model::init_random(ModelConfig::preset("tiny", 40).unwrap(), 9, &Device::Cpu).unwrap()
}

/// The prior's pass against a brute-force full log-softmax of `Decoder::forward` logits.
#[test]
fn scoring_matches_a_full_log_softmax_and_windows_cover_every_token() {
    let model = tiny_prior();
    let mut rng = Rng::new(2);
    let docs: Vec<Vec<u32>> = [30usize, 1, 13, 0, 2].iter().map(|&n| (0..n).map(|_| rng.below(40) as u32).collect()).collect();
    let views: Vec<&[u32]> = docs.iter().map(|d| d.as_slice()).collect();
    let whole = score_documents(&model.decoder, &views, 64, 64, 3, 5).unwrap();
    for (d, s) in docs.iter().zip(&whole) {
        assert_eq!(s.len(), d.len().saturating_sub(1));
        if d.len() < 2 {
            continue;
        }
        let input = Tensor::new(d.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let mask = AttnMask::new(&[vec![true; d.len()]], d.len(), &Device::Cpu).unwrap();
        let logits = model.decoder.forward(&input, &mask, None, Mode::Infer).unwrap().logits.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        for i in 1..d.len() {
            let row = &logits[i - 1];
            let lse = row.iter().map(|&z| (z as f64).exp()).sum::<f64>().ln();
            close(s[i - 1].lp as f64, row[d[i] as usize] as f64 - lse, 1e-4, "lp of the actual token");
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            let top: Vec<u32> = s[i - 1].top.iter().map(|t| t.0).collect();
            assert_eq!(top.len(), 5);
            assert_eq!(top[0], order[0] as u32);
        }
    }
    // Windows of 8: still one score per token after the first; the first window's positions
    // see the same context as the whole pass.
    let windowed = score_documents(&model.decoder, &views, 8, 8, 2, 5).unwrap();
    for (w, s) in windowed.iter().zip(&whole) {
        assert_eq!(w.len(), s.len());
        for i in 0..w.len().min(7) {
            close(w[i].lp as f64, s[i].lp as f64, 1e-4, "first window = whole pass");
        }
    }
    // Batch size does not change the scores.
    let one_by_one = score_documents(&model.decoder, &views, 8, 8, 1, 5).unwrap();
    for (a, b) in one_by_one.iter().flatten().zip(windowed.iter().flatten()) {
        close(a.lp as f64, b.lp as f64, 1e-4, "batch size 1 vs 2");
    }
}

/// A long document edited in windows keeps its length and every token that was not edited.
#[test]
fn windowed_editing_keeps_every_token_outside_the_edits() {
    let model = tiny_prior();
    let mut rng = Rng::new(4);
    let doc: Vec<u32> = (0..100).map(|_| rng.below(40) as u32).collect();
    let scored = score_documents(&model.decoder, &[doc.as_slice()], 16, 16, 4, 8).unwrap().remove(0);
    assert_eq!(scored.len(), 99);
    // A random prior gives p ≈ 1/40: with threshold 0.02 many tokens are eligible.
    let rule = EditRule { threshold: 0.02, beta: 2.0, ..EditRule::default() };
    let e = edit_document(&doc, &scored, &rule, &mut document_rng(1, 0, 1));
    assert_eq!(e.ids.len(), doc.len(), "up_revise deletes nothing, past the window too");
    assert!(e.counts.eligible > 10 && e.counts.realized > 0, "{:?}", e.counts);
    let edited: std::collections::BTreeSet<usize> = e.edits.iter().map(|x| x.pos).collect();
    for (i, (&got, &was)) in e.ids.iter().zip(&doc).enumerate() {
        if edited.contains(&i) {
            assert_ne!(got, was);
        } else {
            assert_eq!(got, was, "position {i} was not edited and stays");
        }
    }
    assert!(edited.iter().any(|&p| p >= 16), "positions past the first window are edited too");
}
