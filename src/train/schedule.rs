//! Learning-rate schedules: linear warmup, then constant or cosine decay.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    Constant,
    Cosine,
    Linear,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub peak_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub decay: Decay,
    /// Floor of the decay as a fraction of the peak (cosine/linear end at `peak * min_ratio`).
    pub min_ratio: f64,
}

impl Schedule {
    /// Learning rate for optimizer step `step` (0-based: the first update uses `lr(0)`).
    /// Warmup ramps linearly from peak/warmup to peak over `warmup_steps` updates.
    pub fn lr(&self, step: u64) -> f64 {
        if self.warmup_steps > 0 && step < self.warmup_steps {
            return self.peak_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps.min(step)) as f64 / decay_steps as f64).min(1.0);
        let floor = self.peak_lr * self.min_ratio;
        match self.decay {
            Decay::Constant => self.peak_lr,
            Decay::Cosine => floor + (self.peak_lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            Decay::Linear => floor + (self.peak_lr - floor) * (1.0 - progress),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_matches_hand_values() {
        let s = Schedule { peak_lr: 1e-3, warmup_steps: 10, total_steps: 110, decay: Decay::Cosine, min_ratio: 0.0 };
        assert!((s.lr(0) - 1e-4).abs() < 1e-15); // 1/10 of peak
        assert!((s.lr(4) - 5e-4).abs() < 1e-15);
        assert!((s.lr(9) - 1e-3).abs() < 1e-15);
        assert!((s.lr(10) - 1e-3).abs() < 1e-15); // cos(0) = 1
        assert!((s.lr(60) - 5e-4).abs() < 1e-12); // halfway: (1 + cos(pi/2)) / 2 = 0.5
        assert!(s.lr(110).abs() < 1e-15); // cos(pi) = -1
        assert!(s.lr(500).abs() < 1e-15, "clamped after the end");
        let floor = Schedule { min_ratio: 0.1, ..s };
        assert!((floor.lr(110) - 1e-4).abs() < 1e-15);
    }

    #[test]
    fn constant_and_linear() {
        let c = Schedule { peak_lr: 2.0, warmup_steps: 0, total_steps: 10, decay: Decay::Constant, min_ratio: 0.0 };
        assert_eq!(c.lr(0), 2.0);
        assert_eq!(c.lr(9), 2.0);
        let l = Schedule { decay: Decay::Linear, ..c };
        assert!((l.lr(5) - 1.0).abs() < 1e-12);
    }
}
