"""Scores prediction/reference pairs with Google's `rouge-score` package (ROUGE-L F-measure,
no stemming) and writes tests/fixtures/rouge_l.jsonl, the reference retort's
`metrics::open_answer::rouge_l` is tested against.

    python -m venv /tmp/rouge && /tmp/rouge/bin/pip install rouge-score==0.1.2
    /tmp/rouge/bin/python tools/make_rouge_fixture.py
"""
import json
import pathlib

from rouge_score import rouge_scorer

PAIRS = [
    ("The cat sat on the mat.", "the cat is on the mat"),
    ("a b", "a c b d"),
    ("left lung", "The lesion is in the left lung"),
    ("Mix flour, sugar and 2 eggs; bake 20 minutes.", "Whisk 2 eggs with sugar, fold in flour and bake for 20 minutes at 180C."),
    ("yes", "no"),
    ("", "anything"),
    ("Crème brûlée with caramel", "creme brulee, caramelised sugar"),
    ("x-ray of the chest shows no abnormality", "chest x-ray: no abnormality"),
    ("one two three four five", "five four three two one"),
    ("the the the", "the"),
    ("Preheat oven. Combine butter and sugar. Add eggs one at a time.",
     "Combine the butter and sugar, then add the eggs one at a time; preheat the oven."),
    ("MRI T2 weighted", "t2-weighted mri"),
]

out = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "rouge_l.jsonl"
scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
with open(out, "w") as f:
    for pred, ref in PAIRS:
        # score(target, prediction)
        s = scorer.score(ref, pred)["rougeL"]
        f.write(json.dumps({"prediction": pred, "reference": ref, "rouge_l": s.fmeasure}) + "\n")
print(f"wrote {out}: {len(PAIRS)} pairs")
