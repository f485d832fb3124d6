//! Which arithmetic the fused training matmuls use: f32 (the default) or bf16 operands with
//! f32 sums (`update_dtype = "bf16"`, issue 24), chosen per thread for a scope.
//!
//! Why a scope and not an argument: the products sit deep in the model (every projection and
//! the LM head), and the choice belongs to the training stage around them. The ops read the
//! mode when they are built (the forward) and keep it for their backward, so a backward run
//! after the scope ended still matches its forward. Per thread, so tests and other stages in
//! the same process are not affected; the rayon workers inside a product never read it.

use std::cell::Cell;

/// The operands' precision of a matrix product; sums are f32 in both. Also the value of the
/// training stages' `update_dtype` key (`"f32"` or `"bf16"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    /// Operands rounded to bf16 (to nearest even), products and sums in f32, as torch's
    /// autocast to bf16 on the CPU does for matmuls.
    Bf16,
}

/// `"f32"` / `"bf16"` from the command line (`bench train --update-dtype`), with the same names
/// and error as the profile key's serde reading.
impl std::str::FromStr for Precision {
    type Err = serde::de::value::Error;

    fn from_str(v: &str) -> Result<Self, Self::Err> {
        use serde::Deserialize;
        Precision::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(v))
    }
}

thread_local! {
    static CURRENT: Cell<Precision> = const { Cell::new(Precision::F32) };
}

/// The warning a training stage gives when `update_dtype = "bf16"` cannot be faster here: on a
/// CPU without AMX the products are rounded f32 copies through sgemm (the same numbers as on
/// AMX, but slower than f32); a GPU keeps f32.
pub fn bf16_update_warning(p: Precision, on_cpu: bool) -> Option<&'static str> {
    if p != Precision::Bf16 {
        return None;
    }
    if !on_cpu {
        return Some("update_dtype = \"bf16\" only changes the CPU's products; on this device the update stays f32");
    }
    (super::gemm_bf16::body() != super::gemm_bf16::Body::Amx).then_some(
        "update_dtype = \"bf16\": this CPU has no AMX tiles (amx_bf16), so the products are computed from rounded f32 copies, \
         with bf16's numbers but slower than update_dtype = \"f32\"",
    )
}

/// The precision of products built on this thread now.
pub fn current() -> Precision {
    CURRENT.with(|c| c.get())
}

/// Sets this thread's precision until the guard drops (then restores the previous one).
#[must_use = "the precision holds only while the guard lives"]
pub fn scoped(p: Precision) -> Scope {
    Scope { previous: CURRENT.with(|c| c.replace(p)) }
}

pub struct Scope {
    previous: Precision,
}

impl Drop for Scope {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_sets_and_restores_the_precision() {
        assert_eq!(current(), Precision::F32);
        {
            let _outer = scoped(Precision::Bf16);
            assert_eq!(current(), Precision::Bf16);
            {
                let _inner = scoped(Precision::F32);
                assert_eq!(current(), Precision::F32);
            }
            assert_eq!(current(), Precision::Bf16);
        }
        assert_eq!(current(), Precision::F32);
    }

    #[test]
    fn the_key_takes_f32_or_bf16_and_names_them_otherwise() {
        #[derive(serde::Deserialize)]
        struct Stage {
            update_dtype: Precision,
        }
        let parse = |v: &str| toml::from_str::<Stage>(&format!("update_dtype = \"{v}\"")).map(|s| s.update_dtype);
        assert_eq!(parse("f32").unwrap(), Precision::F32);
        assert_eq!(parse("bf16").unwrap(), Precision::Bf16);
        let err = parse("fp16").unwrap_err().to_string();
        assert!(err.contains("fp16") && err.contains("`f32`") && err.contains("`bf16`"), "{err}");
        // The command line's reading gives the same values and names the same choices.
        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert_eq!("f32".parse::<Precision>().unwrap(), Precision::F32);
        let err = "fp16".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("fp16") && err.contains("`f32`") && err.contains("`bf16`"), "{err}");
    }

    #[test]
    fn a_bf16_update_warns_where_it_cannot_be_faster() {
        assert_eq!(bf16_update_warning(Precision::F32, true), None);
        assert_eq!(bf16_update_warning(Precision::F32, false), None);
        assert!(bf16_update_warning(Precision::Bf16, false).unwrap().contains("stays f32"));
        // On the CPU: a warning exactly where the AMX body is not the one that runs (read from
        // /proc/cpuinfo independently of the kernel's own detection).
        let cpu_has_amx = std::fs::read_to_string("/proc/cpuinfo").map(|t| t.contains(" amx_bf16")).unwrap_or(false);
        let warning = bf16_update_warning(Precision::Bf16, true);
        if !cpu_has_amx {
            assert!(warning.unwrap().contains("no AMX"));
        } else if super::super::gemm_bf16::body() == super::super::gemm_bf16::Body::Amx {
            assert_eq!(warning, None);
        }
    }
}
