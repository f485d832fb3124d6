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
    let n = rhs.cols;
    if dst.len() != lhs.rows * n {
        bail!("fused gemm: operands do not fit ({}×{} · {}×{n} into {})", lhs.rows, lhs.cols, rhs.rows, dst.len());
    }
    let threads = rayon::current_num_threads();
    sgemm_view(dst, (n, 1), lhs, rhs, Product { accumulate, scale: 1.0, threads })
}

/// How [`sgemm_view`] combines and runs the product.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Product {
    /// Add to dst (else overwrite it).
    pub accumulate: bool,
    /// The product's factor: dst [+]= scale · lhs · rhs.
    pub scale: f32,
    /// gemm's threads: 1 inside a rayon task that is itself one of many (the attention's
    /// query blocks), the pool's size for one big product.
    pub threads: usize,
}

/// `dst [+]= scale · lhs · rhs` where dst (m × n) has element (i, j) at `i·row + j·col` of
/// `dst_strides` = (row, col): a block of columns of a wider matrix (one head's slice of the
/// attention output), or a column-major block (the attention's scores, so that gemm packs the
/// small query block rather than every key). The caller keeps the elements distinct.
pub(crate) fn sgemm_view(dst: &mut [f32], dst_strides: (usize, usize), lhs: &MatRef, rhs: &MatRef, how: Product) -> Result<()> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    let (row, col) = dst_strides;
    let dst_fits = m == 0 || n == 0 || (m - 1) * row + (n - 1) * col < dst.len();
    if rhs.rows != k || !dst_fits || !lhs.fits() || !rhs.fits() {
        bail!("fused gemm: operands do not fit ({m}×{k} · {}×{n} into {} with strides {dst_strides:?})", rhs.rows, dst.len());
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let parallelism = if how.threads > 1 { gemm::Parallelism::Rayon(how.threads) } else { gemm::Parallelism::None };
    // SAFETY: the bounds of all three matrices were checked above (`fits`, `dst_fits`), dst
    // does not alias the inputs (it is a fresh &mut), and gemm reads dst only when asked.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            col as isize,
            row as isize,
            how.accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            how.scale,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}
