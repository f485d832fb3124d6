//! `dst [+]= lhs · rhs` for f32 matrices given by strides, with gemm on rayon's threads: the
//! one matrix product the fused kernels call (no copies for transposed operands).

use candle_core::{bail, Result};

/// A row-major f32 matrix view: element (i, j) at `data[i·row_stride + j·col_stride]`.
pub(crate) struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl MatRef<'_> {
    pub(crate) fn fits(&self) -> bool {
        self.rows == 0 || self.cols == 0 || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride < self.data.len()
    }
}

/// `dst (m × n, row-major, contiguous) [+]= lhs · rhs` with gemm on rayon's threads.
pub(crate) fn sgemm(dst: &mut [f32], lhs: &MatRef, rhs: &MatRef, accumulate: bool) -> Result<()> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    if rhs.rows != k || dst.len() != m * n || !lhs.fits() || !rhs.fits() {
        bail!("fused gemm: operands do not fit ({m}×{k} · {}×{n} into {})", rhs.rows, dst.len());
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the bounds of all three matrices were checked above (`fits`, `dst.len()`), dst
    // does not alias the inputs (it is a fresh &mut), and gemm reads dst only when asked.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}
