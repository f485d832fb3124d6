//! Tests of `advantage.rs` (a sibling file to keep that one readable). Section numbers
//! (§) refer to docs/METHODS.md.

use super::*;
use crate::rng::Rng;
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rl/advantage.json");
    let text = std::fs::read_to_string(path).expect("fixture written by tools/rl_reference.py");
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn f32s(v: &Value) -> Vec<f32> {
    floats(v).into_iter().map(|x| x as f32).collect()
}

fn ids(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as usize)
        .collect()
}

fn mat(v: &Value) -> Mat {
    let rows: Vec<Vec<f32>> = v.as_array().expect("rows").iter().map(f32s).collect();
    Mat::from_rows(&rows).expect("rectangular")
}

fn flat(v: &Value) -> Vec<f64> {
    v.as_array().expect("rows").iter().flat_map(floats).collect()
}

/// |a − e| ≤ tol·max(1, |e|): absolute near 0, relative for large values.
fn assert_close(actual: &[f32], expected: &[f64], tol: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a as f64 - e).abs() <= tol * e.abs().max(1.0),
            "{what}[{i}]: got {a}, expected {e}"
        );
    }
}

#[test]
fn group_estimators_match_reference() {
    let fx = fixture();
    let (scores, groups) = (f32s(&fx["scores"]), ids(&fx["groups"]));
    assert_close(
        &grpo_advantage(&scores, &groups, true).unwrap(),
        &floats(&fx["grpo"]),
        1e-5,
        "grpo",
    );
    assert_close(
        &grpo_advantage(&scores, &groups, false).unwrap(),
        &floats(&fx["grpo_no_std"]),
        1e-5,
        "dr grpo",
    );
    assert_close(
        &rloo_advantage(&scores, &groups).unwrap(),
        &floats(&fx["rloo"]),
        1e-5,
        "rloo",
    );
    let mask = mat(&fx["mask"]);
    let baseline = reinforce_plus_plus_baseline(&scores, &groups, &mask).unwrap();
    assert_close(
        &baseline.data,
        &flat(&fx["reinforce_pp_baseline"]),
        1e-5,
        "reinforce++ baseline",
    );
}

#[test]
fn dispatch_matches_reference_through_token_rewards() {
    let fx = fixture();
    let (mask, rewards, groups) = (mat(&fx["mask"]), mat(&fx["token_rewards"]), ids(&fx["groups"]));
    assert_eq!(token_rewards_from_scores(&f32s(&fx["scores"]), &mask).unwrap(), rewards);
    let batch = AdvantageBatch {
        token_rewards: &rewards,
        mask: &mask,
        groups: &groups,
        values: None,
    };
    let grpo = compute_advantages(&AdvantageEstimator::Grpo { norm_by_std: true }, &batch).unwrap();
    let expected = broadcast_over_tokens(&f32s(&fx["grpo"]), &mask).unwrap();
    assert_close(
        &grpo.advantages.data,
        &expected.data.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        1e-5,
        "grpo tokens",
    );
    let rpp = &fx["reinforce_pp"];
    let gamma = rpp["gamma"].as_f64().unwrap() as f32;
    let out = compute_advantages(&AdvantageEstimator::ReinforcePlusPlus { gamma }, &batch).unwrap();
    assert_close(
        &out.advantages.data,
        &flat(&rpp["advantages"]),
        1e-5,
        "reinforce++ advantages",
    );
    assert_close(&out.returns.data, &flat(&rpp["returns"]), 1e-5, "reinforce++ returns");
    assert_eq!(
        compute_advantages(
            &AdvantageEstimator::Gae {
                gamma: 1.0,
                lambda: 1.0
            },
            &batch
        ),
        Err(AdvantageError::MissingValues)
    );
}

#[test]
fn gae_matches_reference_with_interior_mask_holes() {
    let g = &fixture()["gae"];
    let (mask, values, rewards) = (mat(&g["mask"]), mat(&g["values"]), mat(&g["token_rewards"]));
    let (gamma, lambda) = (
        g["gamma"].as_f64().unwrap() as f32,
        g["lambda"].as_f64().unwrap() as f32,
    );
    let raw = gae_unwhitened(&rewards, &values, &mask, gamma as f64, lambda as f64);
    assert_close(&raw.data, &flat(&g["raw"]), 1e-5, "gae raw");
    let groups: Vec<usize> = (0..mask.rows).collect();
    let batch = AdvantageBatch {
        token_rewards: &rewards,
        mask: &mask,
        groups: &groups,
        values: Some(&values),
    };
    let out = compute_advantages(&AdvantageEstimator::Gae { gamma, lambda }, &batch).unwrap();
    assert_close(&out.advantages.data, &flat(&g["advantages"]), 1e-5, "gae advantages");
    assert_close(&out.returns.data, &flat(&g["returns"]), 1e-5, "gae returns");
}

#[test]
fn masked_statistics_match_reference() {
    let fx = fixture();
    let (w, mask) = (&fx["whiten"], mat(&fx["mask"]));
    let values = mat(&w["values"]);
    let mean = masked_mean(&values, &mask).unwrap();
    let var = masked_var(&values, &mask).unwrap();
    assert!((mean - w["mean"].as_f64().unwrap()).abs() < 1e-6, "mean {mean}");
    assert!(
        (var - w["var"].as_f64().unwrap()).abs() < 1e-6 * var.max(1.0),
        "var {var}"
    );
    assert_close(
        &masked_whiten(&values, &mask).unwrap().data,
        &flat(&w["whitened"]),
        1e-5,
        "whiten",
    );
    assert_close(
        &masked_row_means(&values, &mask).unwrap(),
        &floats(&w["row_means"]),
        1e-5,
        "row means",
    );
}

#[test]
fn masked_var_refuses_a_single_token() {
    let values = Mat::from_rows(&[vec![3.0, 9.0]]).unwrap();
    let mask = Mat::from_rows(&[vec![1.0, 0.0]]).unwrap();
    assert_eq!(
        masked_var(&values, &mask),
        Err(AdvantageError::TooFewTokens { valid: 1 })
    );
}

#[test]
fn grpo_hand_worked_values() {
    // group 0: scores 1, 0 → μ = 0.5, σ = sqrt(0.5) → ±0.5/0.70711 = ±0.70711
    // group 1: all the same → 0; group 2: one response → its raw score (μ=0, σ=1)
    let a = grpo_advantage(&[1.0, 0.0, 2.0, 2.0, 2.0, -0.5], &[0, 0, 1, 1, 1, 2], true).unwrap();
    let s = 0.5 / (0.5f64.sqrt() + 1e-6);
    assert_close(&a, &[s, -s, 0.0, 0.0, 0.0, -0.5 / (1.0 + 1e-6)], 1e-6, "grpo");
    // RLOO: 1 − mean(others)
    let r = rloo_advantage(&[1.0, 0.0, 0.0, 4.0], &[0, 0, 0, 1]).unwrap();
    assert_close(&r, &[1.0, -0.5, -0.5, 4.0], 1e-6, "rloo");
}

#[test]
fn pass_at_k_matches_reference() {
    let p = &fixture()["pass_at_k"];
    let k = p["k"].as_u64().unwrap() as usize;
    let got = pass_at_k_advantage(&f32s(&p["scores"]), &ids(&p["groups"]), k).unwrap();
    assert_close(&got, &floats(&p["advantages"]), 1e-6, "pass@k");
}

fn k_subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
    if k == 0 {
        return vec![vec![]];
    }
    (k - 1..n)
        .flat_map(|last| {
            k_subsets(last, k - 1).into_iter().map(move |mut s| {
                s.push(last);
                s
            })
        })
        .collect()
}

#[test]
fn pass_at_k_equals_mean_subset_advantage() {
    // The closed form of §6.5 must equal: draw every k-subset, give it reward 1 if any
    // member passes, normalise subset rewards by their mean and population std, and credit
    // each response with the mean normalised reward of the subsets it belongs to.
    let mut rng = Rng::new(7);
    for _ in 0..40 {
        let k = 1 + rng.usize(4);
        let n = k + rng.usize(5);
        let scores: Vec<f32> = (0..n).map(|_| if rng.bool(0.4) { 1.0 } else { 0.0 }).collect();
        let subsets = k_subsets(n, k);
        let rewards: Vec<f64> = subsets
            .iter()
            .map(|s| s.iter().any(|&i| scores[i] > 0.0) as u8 as f64)
            .collect();
        let mean = rewards.iter().sum::<f64>() / rewards.len() as f64;
        let std = (rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / rewards.len() as f64).sqrt();
        let expected: Vec<f64> = (0..n)
            .map(|i| {
                let mine: Vec<f64> = subsets
                    .iter()
                    .zip(&rewards)
                    .filter(|(s, _)| s.contains(&i))
                    .map(|(_, r)| (r - mean) / (std + 1e-6))
                    .collect();
                mine.iter().sum::<f64>() / mine.len() as f64
            })
            .collect();
        let got = pass_at_k_advantage(&scores, &vec![0; n], k).unwrap();
        assert_close(&got, &expected, 1e-5, &format!("pass@{k} of {scores:?}"));
    }
}

#[test]
fn pass_at_k_rejects_small_groups() {
    assert_eq!(
        pass_at_k_advantage(&[1.0, 0.0], &[4, 4], 3),
        Err(AdvantageError::GroupTooSmall {
            group: 4,
            size: 2,
            k: 3
        })
    );
}

#[test]
fn gae_with_unit_discount_and_zero_critic_is_reward_to_go() {
    let mut rng = Rng::new(11);
    let (b, t) = (5, 9);
    let mut mask = Mat::zeros(b, t);
    let mut rewards = Mat::zeros(b, t);
    for r in 0..b {
        let len = 1 + rng.usize(t);
        for c in 0..len {
            mask.row_mut(r)[c] = 1.0;
            rewards.row_mut(r)[c] = rng.normal() as f32;
        }
    }
    let zero = Mat::zeros(b, t);
    let raw = gae_unwhitened(&rewards, &zero, &mask, 1.0, 1.0);
    let (_, returns) = gae(&rewards, &zero, &mask, 1.0, 1.0).unwrap();
    for r in 0..b {
        for c in 0..t {
            let to_go: f64 =
                (c..t).map(|s| (rewards.get(r, s) * mask.get(r, s)) as f64).sum::<f64>() * mask.get(r, c) as f64;
            assert!(
                (raw.get(r, c) as f64 - to_go).abs() < 1e-5,
                "Â[{r},{c}] = {} vs {to_go}",
                raw.get(r, c)
            );
            assert!((returns.get(r, c) as f64 - to_go).abs() < 1e-5, "R[{r},{c}]");
        }
    }
}

#[test]
fn entropy_shaping_matches_reference() {
    let fx = fixture();
    let e = &fx["entropy"];
    let mask = mat(&fx["mask"]);
    let adv = mat(&e["advantages"]);
    let masked_adv = adv.map_masked(&mask, |_, _, a| a);
    let (alpha, kappa) = (e["alpha"].as_f64().unwrap() as f32, e["kappa"].as_f64().unwrap() as f32);
    let shaped = entropy_shaped_advantage(&masked_adv, &mat(&e["entropy"]), &mask, alpha, kappa).unwrap();
    assert_close(&shaped.data, &flat(&e["shaped"]), 1e-5, "entropy shaped");
    // the fixture must exercise the cap: some ψ equals |A|/κ
    let capped = (0..shaped.data.len())
        .filter(|&i| {
            mask.data[i] != 0.0
                && masked_adv.data[i] != 0.0
                && ((shaped.data[i] - masked_adv.data[i]) - masked_adv.data[i].abs() / kappa).abs() < 1e-6
        })
        .count();
    assert!(capped > 0, "no token hit the cap");
}

#[test]
fn entropy_bonus_never_flips_the_sign() {
    let mut rng = Rng::new(3);
    for _ in 0..20_000 {
        let a = if rng.bool(0.05) {
            0.0
        } else {
            (rng.normal() * 10f64.powf(rng.f64() * 4.0 - 2.0)) as f32
        };
        let h = (rng.f64() * 12.0) as f32;
        let alpha = (rng.f64() * 3.0 + 1e-3) as f32;
        let kappa = (1.0 + 1e-3 + rng.f64() * 4.0) as f32;
        let one = Mat::from_rows(&[vec![1.0]]).unwrap();
        let shaped = entropy_shaped_advantage(
            &Mat::from_rows(&[vec![a]]).unwrap(),
            &Mat::from_rows(&[vec![h]]).unwrap(),
            &one,
            alpha,
            kappa,
        )
        .unwrap()
        .data[0];
        let context = format!("A={a} H={h} α={alpha} κ={kappa} → {shaped}");
        if a == 0.0 {
            assert_eq!(shaped, 0.0, "{context}");
            continue;
        }
        assert_eq!(shaped.signum(), a.signum(), "{context}");
        // A > 0: A' ∈ [A, A(1 + 1/κ)];  A < 0: A' ∈ [A, A(1 − 1/κ)] (§5.1)
        let upper = if a > 0.0 {
            a * (1.0 + 1.0 / kappa)
        } else {
            a * (1.0 - 1.0 / kappa)
        };
        let slack = 1e-6 * a.abs();
        assert!(shaped >= a - slack && shaped <= upper + slack, "{context}");
    }
}

#[test]
fn entropy_shaping_rejects_kappa_at_most_one() {
    let one = Mat::from_rows(&[vec![1.0]]).unwrap();
    let err = entropy_shaped_advantage(&one, &one, &one, 0.1, 1.0).unwrap_err();
    assert!(err.to_string().contains("κ must be > 1"), "{err}");
}

#[test]
fn ppl_shaping_matches_reference() {
    let fx = fixture();
    let p = &fx["ppl"];
    let (mask, groups, old) = (mat(&fx["mask"]), ids(&p["groups"]), mat(&p["old_logp"]));
    let log_ppl = log_perplexity(&old, &mask).unwrap();
    assert_close(&log_ppl, &floats(&p["log_ppl"]), 1e-5, "log ppl");
    assert_close(&ppl_z_scores(&log_ppl, &groups).unwrap(), &floats(&p["z"]), 1e-5, "z");
    let shaped = ppl_shaped_advantage(
        &mat(&p["advantages"]),
        &old,
        &mask,
        &groups,
        p["alpha"].as_f64().unwrap() as f32,
    )
    .unwrap();
    assert_close(&shaped.data, &flat(&p["shaped"]), 1e-5, "ppl shaped");
}

#[test]
fn iqr_filter_drops_the_outlier_from_the_statistics() {
    // 5 equal values and one outlier: without the filter σ > 0 and z of the equal values ≠ 0
    let z = ppl_z_scores(&[1.0, 1.0, 1.0, 1.0, 1.0, 9.0], &[0; 6]).unwrap();
    assert_close(&z[..5], &[0.0; 5], 1e-9, "kept values"); // μ = 1, σ = 0 → 1
    assert_close(&z[5..], &[8.0], 1e-9, "outlier");
}

#[test]
fn position_bonus_matches_reference_and_keeps_sign() {
    let fx = fixture();
    let p = &fx["position"];
    let (mask, adv) = (mat(&fx["mask"]), mat(&p["advantages"]));
    let f = |k: &str| p[k].as_f64().unwrap() as f32;
    let shaped = position_shaped_advantage(&adv, &mask, f("alpha"), f("steepness"), f("cap")).unwrap();
    assert_close(&shaped.data, &flat(&p["shaped"]), 1e-5, "position");
    for (s, a) in shaped.data.iter().zip(&adv.data) {
        assert!(s.abs() >= a.abs() && (*a == 0.0 || s.signum() == a.signum()));
    }
}

#[test]
fn cosine_kl_schedule() {
    for case in fixture()["cosine_kl"].as_array().unwrap() {
        let got = cosine_kl_coef(case["step"].as_u64().unwrap(), 1e-3, 0.0, 500);
        assert!(
            (got - case["coef"].as_f64().unwrap()).abs() < 1e-12,
            "step {}",
            case["step"]
        );
    }
    assert!((cosine_kl_coef(250, 1e-3, 0.0, 500) - 5e-4).abs() < 1e-15);
    assert_eq!(cosine_kl_coef(10_000, 1e-3, 2e-4, 500), 2e-4);
    let window = StepWindow { start: 200, end: 300 };
    assert!(!window.contains(200) && window.contains(201) && window.contains(299) && !window.contains(300));
}

#[test]
fn estimator_serde_uses_snake_case_tags() {
    let parsed: AdvantageEstimator = serde_json::from_str(r#"{"kind":"grpo","norm_by_std":false}"#).unwrap();
    assert_eq!(parsed, AdvantageEstimator::Grpo { norm_by_std: false });
    let parsed: AdvantageEstimator = serde_json::from_str(r#"{"kind":"gae"}"#).unwrap();
    assert_eq!(
        parsed,
        AdvantageEstimator::Gae {
            gamma: 1.0,
            lambda: 1.0
        }
    );
    let parsed: AdvantageEstimator = serde_json::from_str(r#"{"kind":"reinforce_plus_plus_baseline"}"#).unwrap();
    assert_eq!(parsed, AdvantageEstimator::ReinforcePlusPlusBaseline);
    let text = serde_json::to_string(&AdvantageEstimator::PassAtK { k: 4 }).unwrap();
    assert_eq!(text, r#"{"kind":"pass_at_k","k":4}"#);
    let err = serde_json::from_str::<AdvantageEstimator>(r#"{"kind":"ppo"}"#).unwrap_err();
    assert!(err.to_string().contains("unknown variant `ppo`"), "{err}");
}

#[test]
fn shape_errors_name_the_input() {
    let mask = Mat::zeros(2, 3);
    let err = grpo_advantage(&[1.0, 2.0], &[0], true).unwrap_err();
    assert!(
        err.to_string().starts_with("groups: expected shape (2,), got (1,)"),
        "{err}"
    );
    let err = masked_whiten(&Mat::zeros(2, 2), &mask).unwrap_err();
    assert!(
        err.to_string().starts_with("mask: expected shape (2, 2), got (2, 3)"),
        "{err}"
    );
    assert_eq!(
        token_rewards_from_scores(&[1.0, 1.0], &mask),
        Err(AdvantageError::EmptyResponse { row: 0 })
    );
}
