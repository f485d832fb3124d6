"""retort's verifiers for verl: `compute_score(data_source, solution_str, ground_truth, extra_info=None)`.

Written by `retort export verl`. `data_source` is `retort/<verifier>`:

- `retort/countdown`, `retort/arithmetic`, `retort/subset-sum`: Python ports of retort's task
  verifiers (src/tasks/{countdown,arithmetic,subset_sum}.rs): the same grammar, the same
  64-bit integer rules (an overflow is a wrong answer), the same white-space rules.
  `ground_truth` is the instance's data as JSON.
- `retort/math`, `retort/code`: retort's own verifier, run as `$RETORT_BIN reward test --json`
  (the same code, hence the same verdicts). `ground_truth` is the gold answer (math) or the
  tests as JSON (code).

The score is the verifier's reward (1 correct / 0 wrong for the tasks and math; code's is the
one retort's code verifier gives), then the stage's format rule when it has one
(`format_reward`: STILL-Zero's think/answer shape, or STILL-3's boxed +1/-1/-2). verl's DAPO
reward manager adds the overlong penalty when the stage has one.

Batched use (verl's `batch` reward manager) passes lists; math and code then cost one retort
call per batch. `python3 reward.py SAMPLES.jsonl` grades retort eval samples (rows with
`response`, `task` + `data`, `gold` or the code tests) and prints one JSON verdict per line.
"""

import json
import os
import subprocess
import sys
import tempfile

SETTINGS = json.loads("{}")  # @@SETTINGS@@

PREFIX = "retort/"
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
# Rust's `char::is_ascii_whitespace` (no vertical tab) and `str::trim` (Unicode White_Space).
ASCII_WS = " \t\n\x0c\r"
UNICODE_WS = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
MAX_NESTING = 32  # countdown.rs MAX_NESTING
DIGITS = "0123456789"


class Wrong(Exception):
    """A wrong response, with retort's reason when it is cheap to give."""


def _checked(v):
    if v < I64_MIN or v > I64_MAX:
        raise Wrong("overflow")
    return v


def _int(v, what):
    if isinstance(v, bool) or not isinstance(v, int) or not I64_MIN <= v <= I64_MAX:
        raise Wrong(f"malformed instance data: {what}")
    return v


def _ints(v, what):
    if not isinstance(v, list):
        raise Wrong(f"malformed instance data: {what}")
    return [_int(x, what) for x in v]


class _Chars:
    def __init__(self, text):
        self.s = text
        self.pos = 0

    def skip(self):
        while self.pos < len(self.s) and self.s[self.pos] in ASCII_WS:
            self.pos += 1

    def peek(self):
        self.skip()
        return self.s[self.pos] if self.pos < len(self.s) else None

    def number(self):
        self.skip()
        start = self.pos
        value = 0
        while self.pos < len(self.s) and self.s[self.pos] in DIGITS:
            value = value * 10 + ord(self.s[self.pos]) - 48
            if value > I64_MAX:
                raise Wrong(f"parse error at col {start + 1}: number too large")
            self.pos += 1
        if self.pos == start:
            raise Wrong(f"parse error at col {start + 1}: expected a number")
        return value


# --- countdown (src/tasks/countdown.rs) ------------------------------------------------


def _apply(op, a, b, allow_division):
    if op == "+":
        return _checked(a + b)
    if op == "-":
        return _checked(a - b)
    if op == "*":
        return _checked(a * b)
    if not allow_division:
        raise Wrong("division not allowed in this instance")
    if b == 0:
        raise Wrong("division by zero")
    if a % b != 0:  # zero exactly when Rust's truncating remainder is
        raise Wrong("division not exact")
    return _checked(a // b)  # exact, so floor and truncation agree


def _countdown_parse(text, allow_division):
    """(value, leaves, claim). The expression is evaluated left to right as it is parsed, as
    retort evaluates the tree it builds; any failure is a wrong answer either way."""
    p = _Chars(text)
    leaves = []
    depth = [0]

    def atom():
        if p.peek() == "(":
            if depth[0] >= MAX_NESTING:
                raise Wrong("parentheses nested too deep")
            p.pos += 1
            depth[0] += 1
            inner = expr()
            depth[0] -= 1
            if p.peek() != ")":
                raise Wrong("expected ')'")
            p.pos += 1
            return inner
        n = p.number()
        leaves.append(n)
        return ("ok", n)

    def term():
        lhs = atom()
        while p.peek() in ("*", "/"):
            op = p.s[p.pos]
            p.pos += 1
            rhs = atom()
            lhs = _combine(op, lhs, rhs)
        return lhs

    def expr():
        lhs = term()
        while p.peek() in ("+", "-"):
            op = p.s[p.pos]
            p.pos += 1
            rhs = term()
            lhs = _combine(op, lhs, rhs)
        return lhs

    def _combine(op, lhs, rhs):
        # Evaluation errors are kept, not raised, until the parse is complete: retort reports
        # a parse error before an evaluation error (both are wrong answers).
        if lhs[0] != "ok":
            return lhs
        if rhs[0] != "ok":
            return rhs
        try:
            return ("ok", _apply(op, lhs[1], rhs[1], allow_division))
        except Wrong as e:
            return ("err", str(e))

    if text.strip(UNICODE_WS) == "":
        raise Wrong("parse error at col 1: empty response")
    value = expr()
    claim = None
    if p.peek() == "=":
        p.pos += 1
        claim = p.number()
    if p.peek() is not None:
        raise Wrong("parse error: unexpected text")
    return value, leaves, claim


def _check_numbers(used, given, not_there):
    left = {}
    for n in given:
        left[n] = left.get(n, 0) + 1
    for n in used:
        if n not in left:
            raise Wrong(f"uses {n} which is {not_there}")
        if left[n] == 0:
            raise Wrong(f"reused number {n}")
        left[n] -= 1


def verify_countdown(data, response):
    numbers = _ints(data.get("numbers"), "numbers")
    target = _int(data.get("target"), "target")
    allow = data.get("allow_division")
    if not isinstance(allow, bool):
        raise Wrong("malformed instance data: allow_division")
    value, leaves, claim = _countdown_parse(response, allow)
    _check_numbers(leaves, numbers, "not available")
    if value[0] != "ok":
        raise Wrong(value[1])
    if value[1] != target:
        raise Wrong(f"evaluates to {value[1]}, target {target}")
    if claim is not None and claim != target:
        raise Wrong(f"claims ={claim}, target {target}")


# --- subset-sum (src/tasks/subset_sum.rs) -----------------------------------------------


def verify_subset_sum(data, response):
    numbers = _ints(data.get("numbers"), "numbers")
    target = _int(data.get("target"), "target")
    p = _Chars(response)
    p.skip()
    if p.pos == len(response):
        raise Wrong("parse error at col 1: empty response")
    chosen = [p.number()]
    p.skip()
    while p.pos < len(response) and response[p.pos] == "+":
        p.pos += 1
        chosen.append(p.number())
        p.skip()
    claim = None
    if p.pos < len(response) and response[p.pos] == "=":
        p.pos += 1
        claim = p.number()
        p.skip()
    if p.pos < len(response):
        raise Wrong("parse error: unexpected text")
    _check_numbers(chosen, numbers, "not in the list")
    total = 0
    for n in chosen:
        total = _checked(total + n)
    if total != target:
        raise Wrong(f"sums to {total}, target {target}")
    if claim is not None and claim != target:
        raise Wrong(f"claims ={claim}, target {target}")


# --- arithmetic (src/tasks/arithmetic.rs) -----------------------------------------------


def verify_arithmetic(data, response):
    op = data.get("op")
    a = _int(data.get("a"), "a")
    b = _int(data.get("b"), "b")
    if op not in ("add", "mul"):
        raise Wrong("malformed instance data: op")
    at = response.rfind("=>")
    if at < 0:
        raise Wrong("no final answer: expected '=> N' at the end")
    tail = response[at + 2 :].strip(UNICODE_WS)
    if not tail or any(c not in DIGITS for c in tail) or len(tail) > 18:
        raise Wrong(f"final answer {tail!r} is not a number")
    given = int(tail)
    expected = a + b if op == "add" else a * b
    if given != expected:
        raise Wrong(f"answer {given}, expected {expected}")


TASKS = {"countdown": verify_countdown, "subset-sum": verify_subset_sum, "arithmetic": verify_arithmetic}


# --- math and code: retort's own verifier -------------------------------------------------


def retort_bin():
    return os.environ.get("RETORT_BIN") or SETTINGS.get("retort_bin") or "retort"


def _retort_rows(verifier, rows):
    """Runs `retort reward test --json` over rows; one verdict dict per row, in order."""
    if not rows:
        return []
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False, encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        path = f.name
    try:
        out = subprocess.run(
            [retort_bin(), "reward", "test", path, "--json", "--verifier", verifier],
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        raise RuntimeError(f"reward.py: the retort binary `{retort_bin()}` was not found; set RETORT_BIN") from None
    finally:
        os.unlink(path)
    if out.returncode != 0:
        raise RuntimeError(f"reward.py: `{retort_bin()} reward test` failed: {out.stderr.strip()}")
    verdicts = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    if len(verdicts) != len(rows):
        raise RuntimeError(f"reward.py: retort graded {len(verdicts)} of {len(rows)} rows")
    return verdicts


def _retort_row(verifier, solution_str, ground_truth):
    if verifier == "math":
        return {"completion": solution_str, "gold": ground_truth}
    row = json.loads(ground_truth)
    row["completion"] = solution_str
    return row


# --- format rules (src/train/rl/rewards.rs) -----------------------------------------------


def think_answer_ok(text):
    t = text.strip(UNICODE_WS)
    if not t.startswith("<think>") or not t.endswith("</answer>"):
        return False
    tags = ["<think>", "</think>", "<answer>", "</answer>"]
    if any(t.count(tag) != 1 for tag in tags):
        return False
    ot, ct, oa, ca = (t.find(tag) for tag in tags)
    if not (ot < ct < oa < ca):
        return False
    if t[ot + 7 : ct].strip(UNICODE_WS) == "" or t[oa + 8 : ca].strip(UNICODE_WS) == "":
        return False
    return t[ct + 8 : oa].strip(UNICODE_WS) == ""


def shaped(rule, response, correct, reward):
    if not rule:
        return reward
    if rule.get("kind") == "think_answer":
        return float(correct) if think_answer_ok(response) else 0.0
    if rule.get("kind") == "boxed":
        if "\\boxed" not in response:
            return float(rule.get("missing", -2.0))
        return float(rule.get("correct", 1.0)) if correct else float(rule.get("wrong", -1.0))
    raise ValueError(f"reward.py: unknown format_reward {rule!r}")


# --- verl's entry point --------------------------------------------------------------------


def _verifier(data_source):
    if not isinstance(data_source, str) or not data_source.startswith(PREFIX):
        raise ValueError(f"reward.py grades retort's data sources (retort/<verifier>), not {data_source!r}")
    return data_source[len(PREFIX) :]


def _task_verdict(name, solution_str, ground_truth):
    verify = TASKS.get(name)
    if verify is None:
        return {"correct": False, "reward": 0.0, "reason": f"no verifier for task `{name}`"}
    try:
        data = json.loads(ground_truth)
        if not isinstance(data, dict):
            raise Wrong("malformed instance data")
        verify(data, solution_str)
    except Wrong as e:
        return {"correct": False, "reward": 0.0, "reason": str(e)}
    except ValueError as e:
        return {"correct": False, "reward": 0.0, "reason": f"malformed instance data: {e}"}
    return {"correct": True, "reward": 1.0, "reason": "ok"}


def verdicts(data_sources, solution_strs, ground_truths):
    """retort's verdict ({correct, reward, reason}) on each response."""
    out = [None] * len(data_sources)
    batched = {"math": [], "code": []}
    for i, (ds, sol, gt) in enumerate(zip(data_sources, solution_strs, ground_truths)):
        v = _verifier(ds)
        if v in batched:
            batched[v].append(i)
        else:
            out[i] = _task_verdict(v, sol, gt)
    for v, idx in batched.items():
        rows = [_retort_row(v, solution_strs[i], ground_truths[i]) for i in idx]
        for i, verdict in zip(idx, _retort_rows(v, rows)):
            out[i] = {"correct": bool(verdict["correct"]), "reward": float(verdict["reward"]), "reason": verdict.get("reason", "")}
    return out


def _score(verdict, response):
    score = shaped(SETTINGS.get("format_reward"), response, verdict["correct"], verdict["reward"])
    return {"score": float(score), "acc": float(verdict["correct"])}


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    """verl's reward function: a dict with `score` (the reward) and `acc` (1.0 when correct).
    With lists (verl's batch reward manager), a list of such dicts."""
    if isinstance(data_source, (list, tuple)):
        vs = verdicts(list(data_source), list(solution_str), list(ground_truth))
        return [_score(v, s) for v, s in zip(vs, solution_str)]
    return _score(verdicts([data_source], [solution_str], [ground_truth])[0], solution_str)


def sample_to_verl(row):
    """An eval sample row (retort's samples.jsonl) as (data_source, ground_truth), as the
    export writes them."""
    if "task" in row:
        return PREFIX + row["task"], json.dumps(row["data"])
    if "gold" in row:
        return PREFIX + "math", row["gold"]
    tests = {k: row[k] for k in ("prompt", "tests", "test", "entry_point") if k in row}
    return PREFIX + "code", json.dumps(tests)


def main(argv):
    if len(argv) != 2:
        print("usage: python3 reward.py SAMPLES.jsonl   (retort eval samples; prints a verdict per line)", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    pairs = [sample_to_verl(r) for r in rows]
    responses = [r.get("response", r.get("completion", "")) for r in rows]
    vs = verdicts([p[0] for p in pairs], responses, [p[1] for p in pairs])
    for v, resp in zip(vs, responses):
        s = _score(v, resp)
        print(json.dumps({"correct": v["correct"], "reward": v["reward"], "score": s["score"], "reason": v["reason"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
