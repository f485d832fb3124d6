//! The wording of every task, in retort's own words (§S4.3 lists the reference's families
//! and rough counts; the sentences here are written for retort, not copied).
//!
//! A template is a question and an answer with `{slot}`s. Which slots exist depends on the
//! family; `fill` replaces those given and leaves any other text alone, so a stray brace in a
//! document cannot break rendering. Question and answer are later joined by one space
//! (`qa_deliminator = ' '`).
//!
//! Families and sizes (the reference's sizes in brackets):
//! - NLI classify: yes/no/maybe 12 [≈28], which connective 5 [5], which relation 4 [4];
//!   NLI generate: 8 [≈13 per label]. The family is drawn once per document (0.8 / 0.2).
//! - common_reason: cause → effect 8 [≈25], effect → cause 8 [≈32].
//! - paraphrase: similar 6 [11], different 6 [12].
//! - word2text: definition 6, topic 6, keywords 8 (both directions) [≈25].
//! - intros 18 [18]; framing: title after the text 10 [10], article from the title 10 [10],
//!   completion 6, summarize+completion (a completion then a title question), plain wrappers
//!   13 [13].

/// A question/answer pair with `{slot}`s.
#[derive(Clone, Copy, Debug)]
pub struct Template {
    pub question: &'static str,
    pub answer: &'static str,
}

const fn t(question: &'static str, answer: &'static str) -> Template {
    Template { question, answer }
}

/// Replaces each `{name}` of `slots` in `template`, in one pass: a value that itself holds
/// braces (document text can) is never substituted again, and unknown braces stay as written.
pub fn fill(template: &str, slots: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + slots.iter().map(|(_, v)| v.len()).sum::<usize>());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let slot = after.find('}').and_then(|close| slots.iter().find(|(name, _)| *name == &after[..close]).map(|s| (close, s.1)));
        match slot {
            Some((close, value)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

// ---- natural language inference: slots premise, hypothesis, label, connective, relation, verbalizer

pub const NLI_YES_NO_MAYBE: &[Template] = &[
    t("{premise}\nGiven this statement, is it true that \"{hypothesis}\"?", "{label}"),
    t("Premise: {premise}\nHypothesis: {hypothesis}\nDoes the hypothesis follow from the premise?", "{label}"),
    t("Statement A: {premise}\nStatement B: {hypothesis}\nIf A holds, does B hold as well?", "{label}"),
    t("Read this: \"{premise}\"\nCan one conclude that \"{hypothesis}\"?", "{label}"),
    t("{premise}\nQuestion: does that imply the following? {hypothesis}\nAnswer:", "{label}"),
    t("Suppose \"{premise}\" Is \"{hypothesis}\" then supported?", "{label}"),
    t("Text: {premise}\nClaim: {hypothesis}\nIs the claim backed by the text?", "{label}"),
    t("Taking \"{premise}\" as given, should we accept \"{hypothesis}\"?", "{label}"),
    t("{hypothesis}\nDecide whether the sentence above is supported by this one:\n{premise}\nAnswer:", "{label}"),
    t("First sentence: \"{premise}\"\nSecond sentence: \"{hypothesis}\"\nDoes the first sentence support the second?", "{label}"),
    t("Context: {premise}\nIs it reasonable to infer that {hypothesis}", "{label}"),
    t("Here is a fact: \"{premise}\" Does it back up the statement \"{hypothesis}\"?", "{label}"),
];

pub const NLI_CONNECTIVE: &[Template] = &[
    t("\"{premise}\" ___ \"{hypothesis}\"\nWhich word fills the gap best: Therefore, However or Moreover?", "{connective}"),
    t("Pick the linking word that joins these two sentences.\n1. {premise}\n2. {hypothesis}\nChoices: Therefore / However / Moreover", "{connective}"),
    t("Sentence one: {premise}\nSentence two: {hypothesis}\nWhich connective belongs between them (Therefore, However, Moreover)?", "{connective}"),
    t("How should the second sentence begin so that it follows the first?\nFirst: {premise}\nSecond: \"{hypothesis}\"\nOptions: Therefore, However, Moreover\nWord:", "{connective}"),
    t("Join \"{premise}\" and \"{hypothesis}\" with one of Therefore, However or Moreover. Which one fits?", "{connective}"),
];

pub const NLI_RELATION: &[Template] = &[
    t("Sentence 1: \"{premise}\"\nSentence 2: \"{hypothesis}\"\nWhat is their relation: Entailment, Neutral or Contradictory?", "{relation}"),
    t("Classify how these sentences relate (Entailment, Neutral, Contradictory).\nA: \"{premise}\"\nB: \"{hypothesis}\"", "{relation}"),
    t("\"{premise}\" and \"{hypothesis}\": do they entail, contradict, or neither? Answer with Entailment, Contradictory or Neutral.", "{relation}"),
    t("Label the pair.\nFirst: \"{premise}\"\nSecond: \"{hypothesis}\"\nLabel (Entailment / Neutral / Contradictory):", "{relation}"),
];

pub const NLI_GENERATE: &[Template] = &[
    t("{premise} {verbalizer},", "{hypothesis}"),
    t("Continue the text.\n{premise} {connective},", "{hypothesis}"),
    t("{premise}\nWrite the next sentence, starting from \"{connective}\".", "{hypothesis}"),
    t("\"{premise}\" What comes next if the text goes on with \"{verbalizer}\"?", "{hypothesis}"),
    t("Finish the passage: {premise} {verbalizer}:", "{hypothesis}"),
    t("{premise}\nAdd a sentence that a writer would introduce with \"{connective}\".\nSentence:", "{hypothesis}"),
    t("Given \"{premise}\", extend the thought with a sentence linked by \"{verbalizer}\".", "{hypothesis}"),
    t("{premise} {connective}?", "{hypothesis}"),
];

// ---- commonsense reasoning: slots cause, effect

pub const CAUSE_EFFECT: &[Template] = &[
    t("What follows from this? {cause}", "{effect}"),
    t("{cause}\nWhat is the consequence?", "{effect}"),
    t("Name a result of the following: \"{cause}\"", "{effect}"),
    t("If \"{cause}\", then what happens?", "{effect}"),
    t("Cause: {cause}\nEffect:", "{effect}"),
    t("Consider: {cause}\nWhat outcome does it lead to?\nAnswer:", "{effect}"),
    t("\"{cause}\" What does this bring about?", "{effect}"),
    t("Describe what results when {cause}", "{effect}"),
];

pub const EFFECT_CAUSE: &[Template] = &[
    t("{effect}\nWhy is that?", "Due to {cause}"),
    t("What explains this? {effect}", "{cause}"),
    t("Effect: {effect}\nCause:", "{cause}"),
    t("\"{effect}\" What was the reason?", "The reason: {cause}"),
    t("{effect}\nWhat happened first to make it so?", "{cause}"),
    t("Give the cause of the following: \"{effect}\"", "{cause}"),
    t("Here is an outcome: {effect}\nWhat led to it?\nAnswer:", "{cause}"),
    t("Why would one observe that {effect}", "Owing to {cause}"),
];

// ---- paraphrase: slots s1, s2, verbalizer

pub const SIMILAR: &[Template] = &[
    t("{s1} {verbalizer},", "{s2}"),
    t("Say this in other words: \"{s1}\"", "{s2}"),
    t("Rephrase the sentence below while keeping its meaning.\n{s1}\nRephrased:", "{s2}"),
    t("\"{s1}\" How else could one put this?", "{s2}"),
    t("Write a sentence that means much the same as: {s1}", "{s2}"),
    t("{s1}\nRestate the idea above.", "{s2}"),
];

pub const DIFFERENT: &[Template] = &[
    t("Write a sentence that goes against \"{s1}\".", "{s2}"),
    t("{s1}\nGive a sentence that contrasts with this one.", "{s2}"),
    t("Offer a counterpoint to the statement: {s1}", "{s2}"),
    t("\"{s1}\" State an opposing view.", "{s2}"),
    t("Here is a claim: {s1}\nWhat could be said against it?\nAnswer:", "{s2}"),
    t("{s1} {verbalizer},", "{s2}"),
];

// ---- word-to-text: slots word, definition, sentence, topic, keywords, domain

pub const DEFINITION: &[Template] = &[
    t("What does {word} mean?", "{definition}"),
    t("Define the term \"{word}\".", "{definition}"),
    t("{word}:", "{definition}"),
    t("Explain what {word} is.", "{definition}"),
    t("Give the meaning of {word} as used in the text.", "{definition}"),
    t("How is {word} defined?", "{definition}"),
];

pub const TOPIC: &[Template] = &[
    t("{sentence} is about what?", "{topic}"),
    t("What is the subject of {sentence}?", "{topic}"),
    t("Name the topic: {sentence}", "{topic}"),
    t("{sentence} deals with", "{topic}"),
    t("Tell me what {sentence} covers.", "{topic}"),
    t("Topic of {sentence}:", "{topic}"),
];

pub const KEYWORDS: &[Template] = &[
    t("Use these {domain} terms in one sentence: {keywords}.", "{sentence}"),
    t("Compose a sentence from the text that mentions {keywords}.", "{sentence}"),
    t("{domain} keywords: {keywords}\nA sentence with all of them:", "{sentence}"),
    t("Find the sentence of the article that contains {keywords}.", "{sentence}"),
    t("Which {domain} words appear in this sentence?\n{sentence}", "{keywords}"),
    t("List the key {domain} terms of: \"{sentence}\"", "{keywords}"),
    t("{sentence}\nKeywords:", "{keywords}"),
    t("Pick out the {domain} vocabulary in the sentence below.\n{sentence}\nTerms:", "{keywords}"),
];

// ---- intros: join the article to the question block; slot domain

pub const INTROS: &[&str] = &[
    "\n\nNow some questions about the text:\n\n",
    "\n\nQuestions on the {domain} article above:\n\n",
    "\nAnswer the questions that follow.\n\n",
    "\n\nTest your understanding of this {domain} text:\n\n",
    "\nWork through these questions:\n",
    "\n\nBased on what you read, respond to the following:\n\n",
    "\n\nThe following questions refer to the article.\n",
    "\nSome {domain} questions about the passage:\n\n",
    "\n\nPlease answer:\n\n",
    "\n\n",
    "\nReply to each question using the article:\n\n",
    "\n\nCheck your reading with these questions:\n\n",
    "\nHere are questions and answers drawn from the article:\n\n",
    "\n\nUsing the {domain} passage, answer the following.\n\n",
    "\nQuestions:\n",
    "\n\nWhat you should be able to answer after reading:\n\n",
    "\nA few {domain} exercises on the text:\n\n",
    "\n\nAnswer these, with the article as your source:\n",
];

// ---- framing: slots context, title, domain, first, second

/// Asked after the whole text; answered by the title.
pub const TITLE_AFTER: &[&str] = &[
    "What title would fit this {domain} article?",
    "Give the article above a title.",
    "Suggest a headline for this text.",
    "Title of the {domain} article:",
    "Which title sums up the passage?",
    "How might this {domain} article be titled?",
    "Write a short title for the above.",
    "Propose a name for this article.",
    "What is a fitting heading for the text above?",
    "Summarize the article in a title.",
];

/// Put before the text; the text is the answer.
pub const ARTICLE_FROM_TITLE: &[&str] = &[
    "Write a {domain} article with the title \"{title}\".",
    "Title: {title}\nWrite the article.",
    "Compose a {domain} text headed \"{title}\".",
    "Here is a title: {title}. Produce the article it belongs to.",
    "Draft a piece on {domain} called \"{title}\".",
    "An article is titled \"{title}\". What might it say?",
    "Write about {domain} under the heading: {title}",
    "Expand the title \"{title}\" into a full article.",
    "{title}\nWrite a {domain} article for this headline.",
    "Produce a text for the title below.\n{title}\nArticle:",
];

/// Text completion: (lead before the first part, request before the second part).
pub const COMPLETION: &[(&str, &str)] = &[
    ("Here is the start of a {domain} article:", "\n\nHow does it continue?"),
    ("Read the opening of this text:", "\n\nWrite the rest."),
    ("Beginning of an article:", "\nContinue it:"),
    ("The first part of a {domain} text follows.", "\n\nWhat comes after?"),
    ("Finish the article that starts like this:", "\n\nRest of the article:"),
    ("Opening:", "\nWrite what follows."),
];

/// Plain wrappers around the text when neither framing task is chosen; slot context.
pub const PLAIN: &[&str] = &[
    "Article: {context}",
    "{context}",
    "Read the {domain} text below.\n{context}",
    "Text: {context}",
    "Here is an article about {domain}.\n{context}",
    "Passage:\n{context}",
    "{domain} article:\n{context}",
    "Read this and answer the questions.\n{context}",
    "Document: {context}",
    "Consider this {domain} article.\n{context}",
    "Study the text.\n{context}",
    "Reading:\n{context}",
    "The following is from a {domain} source.\n{context}",
];
