//! What a stage tells the memory preflight about itself: which model it trains or runs, how,
//! and the shapes of its batches. A stage kind fills these in from its config
//! ([`crate::stage::StageConfig::memory_needs`]); the preflight does the arithmetic.

/// How the model's weights are used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Trainable {
    /// Every weight in f32, with gradients and AdamW state.
    #[default]
    Full,
    /// Not trained: the weights in the run's dtype and no optimizer (evaluation, scoring).
    Frozen,
    /// LoRA adapters of this rank on all seven projections; the base is frozen in the run's
    /// dtype (f32 on the CPU, bf16 on a GPU unless `run.dtype` says otherwise).
    Lora { rank: usize },
}

/// One stage's memory-relevant settings. `Needs { model, micro_batch, seq, ..Default::default() }`
/// is a full fine-tune of one model with nothing beside it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Needs {
    /// The model it trains or runs: a folder or `@stage`.
    pub model: String,
    /// Further models the stage loads one after another (an eval stage's list): each is
    /// sized and the biggest counts.
    pub others: Vec<String>,
    /// Independent trained copies of the model (UPRISE's bi-encoder: a query and a prompt
    /// encoder, 2); 0 is read as 1.
    pub copies: usize,
    pub trainable: Trainable,
    /// Sequences in one forward/backward (the micro-batch).
    pub micro_batch: usize,
    /// Tokens in each of those sequences (prompt + response, or `max_len`).
    pub seq: usize,
    /// Whether one optimizer step sums several micro-batches (the host gradient accumulator).
    pub accumulates: bool,
    /// A frozen reference model (f32) kept beside the policy (RL with KL, FlowRL).
    pub reference: bool,
    /// A trainable critic of the policy's shape (PPO).
    pub critic: bool,
    /// FlowRL's log-Z head: the number of layers.
    pub z_head_layers: Option<usize>,
    /// Sampling with a KV cache: rows at once and their context (prompt + new tokens).
    pub generate: Option<(usize, usize)>,
    /// A forward without backward over (rows, tokens; 0 tokens: the model's context, at most
    /// 1024): text evaluation windows, OOD scoring, prompt scoring.
    pub forward: Option<(usize, usize)>,
    /// Whether the training forward ends in a (B, S, V) token head (a decoder's LM head, an
    /// encoder's MLM head); false for a retriever's pooled embeddings.
    pub no_token_head: bool,
    /// A `prompt-score` stage (`@stage`) whose contexts per example multiply the micro-batch
    /// (a retriever encodes each query's positive and negatives); unknown: `micro_batch` as is.
    pub contexts_from: Option<String>,
    /// The prompt length the figures assume when the data is not read yet (a statement for
    /// the printout, e.g. "prompts ≤ 1024 tokens assumed").
    pub assumption: Option<String>,
    /// Keys whose change lowers the peak, for the refusal's "ways out".
    pub knobs: Vec<String>,
    /// A vision-language model's image tokens per row, when the stage knows a bound (None:
    /// every token of a row may be an image token).
    pub image_tokens: Option<usize>,
    /// The parts `[stage.vision]` freezes ("tower", "projector", "llm").
    pub vision_frozen: Vec<String>,
    /// `[stage.vision] checkpoint_tower`: the tower keeps only its blocks' inputs for backward.
    pub vision_checkpoint: bool,
}

/// Where a stage's output model comes from, so the preflight can find its config before the
/// stage has run.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelOrigin {
    /// A built-in shape (`model-init`), with an optional context length and the corpus an
    /// `encoder-tiny` builds its vocabulary from.
    Preset { name: String, context: Option<usize>, corpus: Option<String> },
    /// A hub repository (`pull`).
    Repo(String),
    /// The same architecture as another model (a training stage's output is its input's shape).
    SameAs(String),
}
