//! What a training stage tells the memory preflight about itself: which model it trains, how,
//! and the shapes of its batches. A stage kind fills these in from its config
//! ([`crate::stage::StageConfig::memory_needs`]); the preflight does the arithmetic.

/// How the policy's weights are trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trainable {
    /// Every weight in f32, with gradients and AdamW state.
    Full,
    /// LoRA adapters of this rank on all seven projections; the base is frozen in the run's
    /// dtype (f32 on the CPU, bf16 on a GPU unless `run.dtype` says otherwise).
    Lora { rank: usize },
}

/// One training stage's memory-relevant settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Needs {
    /// The model it trains: a folder or `@stage`.
    pub model: String,
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
    /// The prompt length the figures assume when the data is not read yet (a statement for
    /// the printout, e.g. "prompts ≤ 1024 tokens assumed").
    pub assumption: Option<String>,
    /// Keys whose change lowers the peak, for the refusal's "ways out".
    pub knobs: Vec<String>,
}

/// Where a stage's output model comes from, so the preflight can find its config before the
/// stage has run.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelOrigin {
    /// A built-in shape (`model-init`), with an optional context length.
    Preset { name: String, context: Option<usize> },
    /// A hub repository (`pull`).
    Repo(String),
    /// The same architecture as another model (a training stage's output is its input's shape).
    SameAs(String),
}
