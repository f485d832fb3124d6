#!/usr/bin/env python3
"""Independent numpy reference for the RL maths in src/train/rl (docs/METHODS.md §0-§7).

Writes tests/fixtures/rl/{advantage,loss,zhead}.json: seeded random inputs (rounded to f32,
so that Rust sees exactly the same numbers) and the expected outputs, computed here in
float64 straight from the spec formulas. Loss fixtures also carry expected GRADIENTS w.r.t.
logp / log_z / values / hidden states. torch is not available in the lab venv, so gradients
are derived by hand from the formulas and each one is checked against central finite
differences in float64 before it is written (see `check_grad`).

Usage: python3 tools/rl_reference.py   (from the repository root; needs numpy only)
"""
import json
import math
import os
from itertools import combinations

import numpy as np

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "rl")
EPS_MEAN = 1e-8  # §0 masked_mean denominator
EPS_WHITEN = 1e-8  # §0 masked_whiten
EPS_STD = 1e-6  # §0.3 group std


def f32(x):
    """Round to float32 and back, so Rust and Python start from identical inputs."""
    return np.asarray(x, dtype=np.float32).astype(np.float64)


def tolist(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def right_padded_mask(lengths, T):
    return np.array([[1.0 if t < n else 0.0 for t in range(T)] for n in lengths])


# ----------------------------------------------------------------------------------------------
# §0 helpers


def masked_mean(v, m, axis=None):
    if axis is None:
        return (v * m).sum() / (m.sum() + EPS_MEAN)
    return (v * m).sum(axis=axis) / (m.sum(axis=axis) + EPS_MEAN)


def masked_var(v, m):
    mean = masked_mean(v, m)
    var = masked_mean((v - mean) ** 2, m)
    n = m.sum()
    return var * n / (n - 1)


def masked_whiten(v, m):
    out = (v - masked_mean(v, m)) / np.sqrt(masked_var(v, m) + EPS_WHITEN)
    return out * m  # the Rust side zeroes masked positions


def token_rewards_from_scores(scores, m):
    r = np.zeros_like(m)
    for i, s in enumerate(scores):
        last = np.nonzero(m[i])[0][-1]
        r[i, last] = s
    return r


def group_stats(scores, groups):
    """{gid: (mean, unbiased std, size)} with the size-1 convention μ=0, σ=1 (§0.3)."""
    out = {}
    for g in sorted(set(groups)):
        vals = np.array([s for s, gg in zip(scores, groups) if gg == g])
        if len(vals) == 1:
            out[g] = (0.0, 1.0, 1)
        else:
            out[g] = (vals.mean(), vals.std(ddof=1), len(vals))
    return out


# ----------------------------------------------------------------------------------------------
# advantage estimators


def grpo(scores, groups, norm_by_std):
    st = group_stats(scores, groups)
    out = []
    for s, g in zip(scores, groups):
        mu, sd, _ = st[g]
        out.append((s - mu) / (sd + EPS_STD) if norm_by_std else s - mu)
    return np.array(out)


def rloo(scores, groups):
    st = group_stats(scores, groups)
    out = []
    for s, g in zip(scores, groups):
        mu, _, n = st[g]
        out.append(s if n == 1 else n / (n - 1) * (s - mu))
    return np.array(out)


def pass_at_k(scores, groups, k):
    out = np.zeros(len(scores))
    for g in sorted(set(groups)):
        idx = [i for i, gg in enumerate(groups) if gg == g]
        n = len(idx)
        n_neg = sum(1 for i in idx if scores[i] <= 0)
        rbar = 1 - math.comb(n_neg, k) / math.comb(n, k)
        sd = math.sqrt(rbar * (1 - rbar))
        a_pos = (1 - rbar) / (sd + EPS_STD)
        c_neg = math.comb(n_neg - 1, k - 1) / math.comb(n - 1, k - 1) if n_neg > 0 else 0.0
        a_neg = (1 - rbar - c_neg) / (sd + EPS_STD)
        for i in idx:
            out[i] = a_pos if scores[i] > 0 else a_neg
    return out


def reinforce_pp(rew, m, gamma):
    B, T = m.shape
    ret = np.zeros((B, T))
    run = np.zeros(B)
    for t in reversed(range(T)):
        run = rew[:, t] + gamma * run
        ret[:, t] = run
        run = run * m[:, t]
    return masked_whiten(ret, m), ret * m


def reinforce_pp_baseline(scores, groups, m):
    centred = grpo(scores, groups, False)
    return masked_whiten(centred[:, None] * m, m)


def gae_raw(rew, values, m, gamma, lam):
    B, T = m.shape
    nextv = np.zeros(B)
    last = np.zeros(B)
    out = np.zeros((B, T))
    for t in reversed(range(T)):
        delta = rew[:, t] + gamma * nextv - values[:, t]
        new_last = delta + gamma * lam * last
        nextv = values[:, t] * m[:, t] + (1 - m[:, t]) * nextv
        last = new_last * m[:, t] + (1 - m[:, t]) * last
        out[:, t] = last
    return out * m


def gae(rew, values, m, gamma, lam):
    raw = gae_raw(rew, values, m, gamma, lam)
    return masked_whiten(raw, m), (raw + values) * m


# ----------------------------------------------------------------------------------------------
# shapings


def entropy_shaped(A, H, m, alpha, kappa):
    psi = np.minimum(alpha * np.maximum(H, 0), np.abs(A) / kappa)
    return (A + psi) * m


def ppl_z(log_ppl, groups):
    z = np.zeros(len(log_ppl))
    for g in sorted(set(groups)):
        idx = [i for i, gg in enumerate(groups) if gg == g]
        v = np.array([log_ppl[i] for i in idx])
        q1, q3 = np.quantile(v, 0.25), np.quantile(v, 0.75)
        lo, hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
        kept = v[(v >= lo) & (v <= hi)]
        mu, sd = kept.mean(), kept.std()
        if sd < 1e-6:
            sd = 1.0
        for i, x in zip(idx, v):
            z[i] = (x - mu) / sd
    return z


def ppl_shaped(A, old, m, groups, alpha):
    log_ppl = -masked_mean(old, m, axis=1)
    z = ppl_z(log_ppl, groups)
    w = np.clip(1 - alpha * z, 0.8, 1.2)
    return A * w[:, None] * m, log_ppl, z


def position_shaped(A, m, alpha, k, cap):
    c = np.cumsum(m, axis=1) * m
    p = (c - 1) / np.maximum(m.sum(axis=1, keepdims=True), 1)
    bonus = alpha / (1 + np.exp(-k * (p - 0.5))) * m
    psi = np.minimum(bonus, cap * np.abs(A))
    return (A + np.sign(A) * psi) * m


def cosine_kl(step, b0, bmin, horizon):
    if step >= horizon:
        return bmin
    return bmin + (b0 - bmin) * 0.5 * (1 + math.cos(math.pi * step / horizon))


# ----------------------------------------------------------------------------------------------
# losses (values) and their gradients (by hand, checked by finite differences)


def agg_weights(m, mode, constant=None):
    """∂L/∂ℓ for L = agg_loss(ℓ, m, mode) (§0.1); L = Σ W·ℓ is linear in ℓ."""
    B, T = m.shape
    seqs = max((m.sum(axis=1) > 0).sum(), 1)
    if mode == "token_mean":
        return m / (m.sum() + EPS_MEAN)
    if mode == "seq_mean_token_sum":
        return m / seqs
    if mode == "seq_mean_token_mean":
        return m / (m.sum(axis=1, keepdims=True) + EPS_MEAN) / seqs
    if mode == "seq_mean_token_sum_norm":
        return m / constant
    raise ValueError(mode)


def agg_loss(l, m, mode, constant=None):
    return float((agg_weights(m, mode, constant) * l).sum())


def kl_values(logp, ref, kind):
    d = logp - ref
    if kind in ("k1", "k1_plus"):
        return d
    if kind == "abs":
        return np.abs(d)
    if kind == "k2":
        return 0.5 * d * d
    if kind in ("k3", "k3_plus"):
        x = np.clip(ref - logp, -20, 20)
        return np.clip(np.exp(x) - x - 1, -10, 10)
    raise ValueError(kind)


def kl_grad(logp, ref, kind):
    """∂k/∂logp elementwise."""
    d = logp - ref
    if kind == "k1":
        return np.ones_like(d)
    if kind == "abs":
        return np.sign(d)
    if kind in ("k2", "k1_plus", "k3_plus"):
        return d  # straight-through estimators take k2's gradient
    if kind == "k3":
        x = ref - logp
        inside = (np.abs(x) < 20) & (np.exp(np.clip(x, -20, 20)) - np.clip(x, -20, 20) - 1 < 10)
        return np.where(inside, 1 - np.exp(x), 0.0)
    raise ValueError(kind)


def ppo_token_losses(logp, old, A, lo, hi, c):
    d = np.clip(logp - old, -20, 20)
    ratio = np.exp(d)
    l1 = -A * ratio
    l2 = -A * np.clip(ratio, 1 - lo, 1 + hi)
    lc = np.maximum(l1, l2)
    if c is None:
        return lc, l1, l2, lc, None
    l3 = -A * c
    return np.where(A < 0, np.minimum(lc, l3), lc), l1, l2, lc, l3


def ppo_loss(logp, old, A, m, lo, hi, c, mode, constant=None):
    ell, l1, l2, lc, l3 = ppo_token_losses(logp, old, A, lo, hi, c)
    loss = agg_loss(ell, m, mode, constant)
    clipfrac = masked_mean((l2 > l1).astype(float), m)
    lower = 0.0 if l3 is None else masked_mean(((lc > l3) & (A < 0)).astype(float), m)
    ppo_kl = masked_mean(-np.clip(logp - old, -20, 20), m)
    return loss, {"pg_clipfrac": float(clipfrac), "pg_clipfrac_lower": float(lower), "ppo_kl": float(ppo_kl)}


def ppo_grad(logp, old, A, m, lo, hi, c, mode, constant=None):
    d_raw = logp - old
    d = np.clip(d_raw, -20, 20)
    ratio = np.exp(d)
    dratio = np.where(np.abs(d_raw) < 20, ratio, 0.0)
    ell, l1, l2, lc, l3 = ppo_token_losses(logp, old, A, lo, hi, c)
    g1 = -A * dratio
    g2 = -A * dratio * ((ratio > 1 - lo) & (ratio < 1 + hi))
    # max/min split the gradient evenly on ties (torch and candle agree)
    gc = np.where(l1 > l2, g1, np.where(l2 > l1, g2, 0.5 * (g1 + g2)))
    if c is not None:
        dual = np.where(lc < l3, gc, np.where(lc > l3, 0.0, 0.5 * gc))
        gc = np.where(A < 0, dual, gc)
    return agg_weights(m, mode, constant) * gc


def value_loss(v, v_old, R, m, eps_v, mode):
    vc = np.clip(v, v_old - eps_v, v_old + eps_v)
    a, b = (v - R) ** 2, (vc - R) ** 2
    loss = 0.5 * agg_loss(np.maximum(a, b), m, mode)
    clipfrac = masked_mean((b > a).astype(float), m)
    return loss, float(clipfrac)


def value_grad(v, v_old, R, m, eps_v, mode):
    vc = np.clip(v, v_old - eps_v, v_old + eps_v)
    a, b = (v - R) ** 2, (vc - R) ** 2
    ga = 2 * (v - R)
    gb = 2 * (vc - R) * ((v > v_old - eps_v) & (v < v_old + eps_v))
    g = np.where(a > b, ga, np.where(b > a, gb, 0.5 * (ga + gb)))
    return 0.5 * agg_weights(m, mode) * g


def explained_variance(R, V, m):
    sel = m > 0
    r, v = R[sel], V[sel]
    return float(1 - np.var(r - v, ddof=1) / (np.var(r, ddof=1) + 1e-5))


def flowrl(logp, old, ref, m, adv, log_z, beta, mode):
    lbar = masked_mean(logp, m, axis=1)
    rbar = masked_mean(ref, m, axis=1)
    delta = log_z + lbar - beta * adv - rbar
    w_raw = np.exp((m * (logp - old)).sum(axis=1))
    if mode["kind"] == "none":
        w = w_raw
    elif mode["kind"] == "two_sided":
        w = np.clip(w_raw, 1 - mode["eps"], 1 + mode["eps"])
    elif mode["kind"] == "upper":
        w = np.minimum(w_raw, mode["max"])
    B = len(adv)
    loss = float((w * delta**2).mean())
    metrics = {
        "log_z": float(log_z.mean()),
        "tb_loss": loss,
        "importance_weight_raw": float(w_raw.mean()),
        "importance_weight": float(w.mean()),
        "log_prob": float(masked_mean(logp, m)),
        "ref_log_prob": float(masked_mean(ref, m)),
        "ppo_kl": float(masked_mean(old - logp, m)),
        "ref_kl": float(masked_mean(logp - ref, m)),
    }
    g_logz = 2 * w * delta / B
    g_logp = g_logz[:, None] * m / (m.sum(axis=1, keepdims=True) + EPS_MEAN)
    return loss, metrics, g_logp, g_logz


def entropy_from_logits(z):
    zmax = z.max(axis=-1, keepdims=True)
    lse = zmax[..., 0] + np.log(np.exp(z - zmax).sum(axis=-1))
    p = np.exp(z - lse[..., None])
    return lse - (p * z).sum(axis=-1)


# ----------------------------------------------------------------------------------------------
# Z head (§4.4): [Linear(H,H) → GELU(erf) → LayerNorm(H)] × (layers−1) → Linear(H,1)

erf = np.vectorize(math.erf)


def gelu(x):
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def layer_norm(x, g, b, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def pool_prompt(h, pm):
    return (h * pm[..., None]).sum(axis=1) / (pm.sum(axis=1, keepdims=True) + EPS_MEAN)


def zhead_forward(weights, layers, pooled):
    x = pooled
    for i in range(layers - 1):
        x = x @ weights[f"hidden.{i}.linear.weight"].T + weights[f"hidden.{i}.linear.bias"]
        x = layer_norm(gelu(x), weights[f"hidden.{i}.norm.weight"], weights[f"hidden.{i}.norm.bias"])
    return (x @ weights["out.weight"].T + weights["out.bias"])[:, 0]


# ----------------------------------------------------------------------------------------------
# finite-difference check of every hand-derived gradient


def numeric_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = (f(xp) - f(xm)) / (2 * h)
    return g


def check_grad(name, analytic, f, x):
    num = numeric_grad(f, x)
    err = np.max(np.abs(num - analytic) / np.maximum(1.0, np.abs(num)))
    assert err < 1e-5, f"{name}: hand gradient disagrees with finite differences (max rel err {err})"


# ----------------------------------------------------------------------------------------------
# fixture builders


def advantage_cases(rng):
    cases = {}
    T = 7
    # groups: 0 mixed binary, 1 all-same (zero signal), 2 singleton, 3 continuous scores
    groups = [0, 0, 0, 0, 1, 1, 1, 1, 2, 3, 3, 3]
    scores = f32([1, 0, 0, 1, 1, 1, 1, 1, 0.7, 0.3, -0.4, 1.5])
    lengths = rng.integers(1, T + 1, size=len(groups))
    m = right_padded_mask(lengths, T)
    rew = token_rewards_from_scores(scores, m)
    cases["groups"] = groups
    cases["scores"] = tolist(scores)
    cases["mask"] = tolist(m)
    cases["token_rewards"] = tolist(rew)
    cases["grpo"] = tolist(grpo(scores, groups, True))
    cases["grpo_no_std"] = tolist(grpo(scores, groups, False))
    cases["rloo"] = tolist(rloo(scores, groups))
    gamma = 0.9
    a, ret = reinforce_pp(rew, m, gamma)
    cases["reinforce_pp"] = {"gamma": gamma, "advantages": tolist(a), "returns": tolist(ret)}
    cases["reinforce_pp_baseline"] = tolist(reinforce_pp_baseline(scores, groups, m))

    # GAE: a critic, a KL-shaped dense reward and a mask with an interior hole (tool tokens)
    gm = m.copy()
    gm[0, :] = [1, 1, 0, 0, 1, 1, 0]
    values = f32(rng.normal(0, 0.5, size=m.shape)) * gm
    dense = f32(token_rewards_from_scores(scores, gm) - 0.01 * f32(rng.normal(size=m.shape)) * gm)
    g_a, g_r = gae(dense, values, gm, 0.95, 0.9)
    cases["gae"] = {
        "gamma": 0.95, "lambda": 0.9, "mask": tolist(gm), "values": tolist(values),
        "token_rewards": tolist(dense), "advantages": tolist(g_a), "returns": tolist(g_r),
        "raw": tolist(gae_raw(dense, values, gm, 0.95, 0.9)),
    }

    v = f32(rng.normal(1.0, 2.0, size=m.shape))
    cases["whiten"] = {"values": tolist(v), "mean": float(masked_mean(v, m)), "var": float(masked_var(v, m)),
                       "whitened": tolist(masked_whiten(v, m)), "row_means": tolist(masked_mean(v, m, axis=1))}

    # pass@k: N=6 per group, every count of failures, k = 3
    pk_groups, pk_scores = [], []
    for g, n_pos in enumerate([0, 1, 2, 5, 6]):
        s = [1.0] * n_pos + [0.0] * (6 - n_pos)
        rng.shuffle(s)
        pk_groups += [g] * 6
        pk_scores += s
    cases["pass_at_k"] = {"k": 3, "groups": pk_groups, "scores": pk_scores,
                          "advantages": tolist(pass_at_k(pk_scores, pk_groups, 3))}

    # entropy shaping: per-token advantages of both signs, zeros, entropies up to 4 (ψ at cap)
    A = f32(rng.normal(0, 1, size=m.shape))
    A[5, :] = 0.0
    H = f32(rng.uniform(0, 4, size=m.shape))
    cases["entropy"] = {"alpha": 0.4, "kappa": 2.0, "advantages": tolist(A), "entropy": tolist(H),
                        "shaped": tolist(entropy_shaped(A * m, H, m, f32(0.4), 2.0))}

    # PPL shaping: groups of 6 with one outlier (IQR filter), and a singleton group
    ppl_groups = [0] * 6 + [1] * 5 + [2]
    old = f32(-rng.uniform(0.2, 0.8, size=m.shape))
    old[3, :] = -4.0  # a high-perplexity outlier in group 0
    A_seq = f32(rng.normal(size=len(ppl_groups)))
    A_tok = A_seq[:, None] * m
    shaped, log_ppl, z = ppl_shaped(A_tok, old, m, ppl_groups, f32(0.05))
    cases["ppl"] = {"alpha": 0.05, "groups": ppl_groups, "old_logp": tolist(old), "advantages": tolist(A_tok),
                    "log_ppl": tolist(log_ppl), "z": tolist(z), "shaped": tolist(shaped)}

    cases["position"] = {"alpha": 0.3, "steepness": 15.0, "cap": 0.5, "advantages": tolist(A * m),
                         "shaped": tolist(position_shaped(A * m, m, f32(0.3), 15.0, 0.5))}

    cases["cosine_kl"] = [{"step": s, "beta0": 1e-3, "beta_min": 0.0, "horizon": 500,
                           "coef": cosine_kl(s, 1e-3, 0.0, 500)} for s in [0, 1, 125, 250, 499, 500, 900]]
    return cases


def loss_cases(rng):
    cases = {}
    B, T = 6, 7
    lengths = [7, 3, 5, 1, 6, 0]  # the last response has no valid token (B' = 5)
    m = right_padded_mask(lengths, T)
    logp = f32(rng.uniform(-3, -0.05, size=(B, T)))
    # log-ratios cover both clip bounds, the dual-clip region (ratio > 3) and the ±20 clamp
    d = rng.uniform(-0.7, 0.7, size=(B, T))
    d[0, 1], d[0, 2], d[1, 0], d[2, 3] = 1.6, -1.3, 25.0, -24.0
    old = f32(logp - d)
    A = f32(rng.normal(0, 1.2, size=(B, T)))
    A[0, :] = -np.abs(A[0, :])  # negative advantages meet the large ratios → dual-clip
    A[4, :] = 0.0  # an all-same GRPO group: zero advantage
    cases["inputs"] = {"mask": tolist(m), "logp": tolist(logp), "old": tolist(old), "advantages": tolist(A)}
    ratio, valid = np.exp(np.clip(logp - old, -20, 20)), m > 0
    assert (valid & (ratio > 1.28) & (A > 0)).any(), "no token clipped at the upper bound"
    assert (valid & (ratio < 0.8) & (A < 0)).any(), "no token clipped at the lower bound"
    assert (valid & (ratio > 3.0) & (A < 0)).any(), "no token reaches the dual clip"
    assert (valid & (np.abs(logp - old) > 20)).any(), "no token reaches the ±20 log-ratio clamp"

    agg = []
    ell = f32(rng.normal(size=(B, T)))
    for mode in ["token_mean", "seq_mean_token_sum", "seq_mean_token_mean", "seq_mean_token_sum_norm"]:
        const = float(T) if mode == "seq_mean_token_sum_norm" else None
        agg.append({"mode": mode, "constant": const, "loss": agg_loss(ell, m, mode, const)})
    cases["agg"] = {"values": tolist(ell), "cases": agg}

    ppo = []
    configs = [(0.2, 0.28, 3.0, "token_mean"), (0.2, 0.2, None, "seq_mean_token_mean"),
               (0.2, 0.28, 3.0, "seq_mean_token_sum"), (0.1, 0.3, 2.0, "seq_mean_token_sum_norm")]
    for lo, hi, c, mode in configs:
        const = float(T) if mode == "seq_mean_token_sum_norm" else None
        loss, metrics = ppo_loss(logp, old, A, m, lo, hi, c, mode, const)
        grad = ppo_grad(logp, old, A, m, lo, hi, c, mode, const)
        check_grad(f"ppo {mode}", grad, lambda x: ppo_loss(x, old, A, m, lo, hi, c, mode, const)[0], logp)
        ppo.append({"clip_low": lo, "clip_high": hi, "dual_clip": c, "mode": mode, "constant": const,
                    "loss": loss, "metrics": metrics, "grad_logp": tolist(grad)})
    cases["ppo"] = ppo

    ref = f32(logp + rng.normal(0, 0.5, size=(B, T)))
    ref[0, 3] = logp[0, 3] + 3.5  # k3 above its +10 clamp
    ref[1, 1] = logp[1, 1] - 25.0  # beyond the ±20 log clamp
    kls = []
    for kind in ["k1", "abs", "k2", "k3", "k1_plus", "k3_plus"]:
        val = kl_values(logp, ref, kind)
        grad = agg_weights(m, "token_mean") * kl_grad(logp, ref, kind)
        if not kind.endswith("_plus"):
            check_grad(f"kl {kind}", grad, lambda x: agg_loss(kl_values(x, ref, kind), m, "token_mean"), logp)
        kls.append({"kind": kind, "values": tolist(val), "token_mean": agg_loss(val, m, "token_mean"),
                    "grad_logp": tolist(grad)})
    cases["kl"] = {"ref": tolist(ref), "cases": kls}

    scores = f32([1.0, -1.0, 1.0, 1.0, -1.0, 0.0])
    tok = np.zeros((B, T))
    for i, n in enumerate(lengths):
        tok[i, max(n, 1) - 1] = scores[i]
    kld = kl_values(old, ref, "k1") * m
    cases["kl_in_reward"] = {"beta": 0.05, "token_scores": tolist(tok), "rewards": tolist(tok - 0.05 * kld),
                             "current_kl": float(masked_mean(kld, m, axis=1).mean())}

    v_old = f32(rng.normal(size=(B, T)))
    v = f32(v_old + rng.uniform(-1, 1, size=(B, T)))
    R = f32(rng.normal(size=(B, T)))
    vl, vcf = value_loss(v, v_old, R, m, 0.5, "token_mean")
    vg = value_grad(v, v_old, R, m, 0.5, "token_mean")
    check_grad("value", vg, lambda x: value_loss(x, v_old, R, m, 0.5, "token_mean")[0], v)
    cases["value"] = {"values": tolist(v), "old_values": tolist(v_old), "returns": tolist(R), "clip": 0.5,
                      "loss": vl, "vf_clipfrac": vcf, "grad_values": tolist(vg),
                      "explained_variance": explained_variance(R, v, m)}

    # FlowRL: sequence log-ratios chosen so each IS mode clips something
    fm = right_padded_mask([7, 3, 5, 1, 6, 4], T)
    target_log_w = np.array([-1.0, -0.1, 0.05, 0.15, 1.0, 3.0])
    f_old = f32(logp - fm * (target_log_w / fm.sum(axis=1))[:, None] + (1 - fm) * 5.0)
    f_ref = f32(logp + rng.normal(0, 0.3, size=(B, T)))
    adv = f32([1.2, -0.8, 0.0, 0.0, 2.1, -2.6])
    log_z = f32(rng.normal(0, 0.5, size=B))
    w_check = np.exp((fm * (logp - f_old)).sum(axis=1))
    assert (w_check > 10).any() and (w_check < 0.8).any() and (w_check > 1.2).any(), "IS modes would not clip"
    flows = []
    for mode in [{"kind": "none"}, {"kind": "two_sided", "eps": 0.2}, {"kind": "upper", "max": 10.0}]:
        loss, metrics, g_logp, g_logz = flowrl(logp, f_old, f_ref, fm, adv, log_z, 15.0, mode)
        check_grad("flowrl logp", g_logp, lambda x: flowrl_detached_w(x, logp, f_old, f_ref, fm, adv, log_z, mode),
                   logp)
        check_grad("flowrl log_z", g_logz, lambda x: flowrl(logp, f_old, f_ref, fm, adv, x, 15.0, mode)[0], log_z)
        flows.append({"mode": mode, "loss": loss, "metrics": metrics, "grad_logp": tolist(g_logp),
                      "grad_log_z": tolist(g_logz)})
    cases["flowrl"] = {"beta": 15.0, "mask": tolist(fm), "old": tolist(f_old), "ref": tolist(f_ref),
                       "advantages": tolist(adv), "log_z": tolist(log_z), "cases": flows}

    logits = f32(rng.normal(0, 2.0, size=(3, 4, 5)))
    logits[0, 0] = [30.0, 0.0, 0.0, 0.0, 0.0]  # nearly deterministic position
    cases["entropy"] = {"logits": tolist(logits), "entropy": tolist(entropy_from_logits(logits))}
    return cases


def flowrl_detached_w(x, logp_for_w, old, ref, m, adv, log_z, mode):
    """FlowRL loss as a function of logp with w held fixed at its value for `logp_for_w`
    (w is detached, §4.2), for the finite-difference check."""
    lbar = masked_mean(x, m, axis=1)
    rbar = masked_mean(ref, m, axis=1)
    delta = log_z + lbar - 15.0 * adv - rbar
    w_raw = np.exp((m * (logp_for_w - old)).sum(axis=1))
    if mode["kind"] == "two_sided":
        w_raw = np.clip(w_raw, 1 - mode["eps"], 1 + mode["eps"])
    elif mode["kind"] == "upper":
        w_raw = np.minimum(w_raw, mode["max"])
    return float((w_raw * delta**2).mean())


def zhead_cases(rng):
    H, layers, B, L = 4, 3, 3, 5
    weights = {}
    for i in range(layers - 1):
        weights[f"hidden.{i}.linear.weight"] = f32(rng.normal(0, 0.6, size=(H, H)))
        weights[f"hidden.{i}.linear.bias"] = f32(rng.normal(0, 0.2, size=H))
        weights[f"hidden.{i}.norm.weight"] = f32(rng.normal(1, 0.1, size=H))
        weights[f"hidden.{i}.norm.bias"] = f32(rng.normal(0, 0.1, size=H))
    weights["out.weight"] = f32(rng.normal(0, 0.6, size=(1, H)))
    weights["out.bias"] = f32([0.0])
    hidden = f32(rng.normal(size=(B, L, H)))
    pm = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]], dtype=np.float64)  # left-padded prompts
    pooled = pool_prompt(hidden, pm)
    log_z = zhead_forward(weights, layers, pooled)
    coeffs = np.array([1.0, -2.0, 0.5])  # L = Σ c_b log Z_b, to get a non-trivial gradient
    grad_hidden = numeric_grad(lambda h: float((coeffs * zhead_forward(weights, layers, pool_prompt(h, pm))).sum()),
                               hidden)
    return {"hidden_size": H, "layers": layers, "weights": {k: tolist(v) for k, v in weights.items()},
            "hidden": tolist(hidden), "prompt_mask": tolist(pm), "pooled": tolist(pooled), "log_z": tolist(log_z),
            "loss_coeffs": tolist(coeffs), "grad_hidden": tolist(grad_hidden)}


def self_check_pass_at_k():
    """The closed form of §6.5 equals the mean over k-subsets of the group-level advantage."""
    scores = [1, 0, 0, 1, 0, 0, 0]
    k = 3
    subsets = list(combinations(range(len(scores)), k))
    r = np.array([float(any(scores[i] > 0 for i in s)) for s in subsets])
    rbar, sd = r.mean(), r.std()
    for i in range(len(scores)):
        mine = [(rs - rbar) / (sd + EPS_STD) for s, rs in zip(subsets, r) if i in s]
        assert abs(np.mean(mine) - pass_at_k(scores, [0] * len(scores), k)[i]) < 1e-9


def main():
    self_check_pass_at_k()
    os.makedirs(OUT_DIR, exist_ok=True)
    rng = np.random.default_rng(20261125)
    for name, builder in [("advantage", advantage_cases), ("loss", loss_cases), ("zhead", zhead_cases)]:
        data = builder(rng)
        data["_generated_by"] = "tools/rl_reference.py (numpy float64 from research/rl-spec.md)"
        path = os.path.join(OUT_DIR, f"{name}.json")
        with open(path, "w") as fh:
            json.dump(data, fh, indent=1)
            fh.write("\n")
        print("wrote", os.path.normpath(path))


if __name__ == "__main__":
    main()
