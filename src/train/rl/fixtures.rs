//! Test helpers shared by the RL unit tests: the reference fixtures that
//! tools/rl_reference.py writes to tests/fixtures/rl/, read as tensors, and tolerant
//! comparisons.

use candle_core::{DType, Device, Tensor, Var};
use serde_json::Value;

pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/rl/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture written by tools/rl_reference.py");
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// A nested JSON array of numbers as an f32 tensor of the same shape.
pub fn tensor(v: &Value) -> Tensor {
    fn collect(v: &Value, shape: &mut Vec<usize>, data: &mut Vec<f32>, depth: usize) {
        match v {
            Value::Array(items) => {
                if shape.len() == depth {
                    shape.push(items.len());
                }
                items.iter().for_each(|x| collect(x, shape, data, depth + 1));
            }
            x => data.push(x.as_f64().expect("number") as f32),
        }
    }
    let (mut shape, mut data) = (vec![], vec![]);
    collect(v, &mut shape, &mut data, 0);
    Tensor::from_vec(data, shape, &Device::Cpu).expect("rectangular")
}

pub fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(items) => items.iter().flat_map(flat).collect(),
        x => vec![x.as_f64().expect("number")],
    }
}

pub fn values_of(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

pub fn assert_close(actual: &[f64], expected: &[f64], tol: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= tol * e.abs().max(1.0), "{what}[{i}]: got {a}, expected {e}");
    }
}

pub fn assert_scalar(actual: f64, expected: &Value, tol: f64, what: &str) {
    assert_close(&[actual], &[expected.as_f64().expect("number")], tol, what);
}

pub fn grad_of(loss: &Tensor, var: &Var) -> Vec<f64> {
    let grads = loss.backward().unwrap();
    values_of(grads.get(var.as_tensor()).expect("the variable is on the loss graph"))
}
