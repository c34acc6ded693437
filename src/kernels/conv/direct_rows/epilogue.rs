//! The epilogue of the AVX-512 rows kernel ([`super::forward_avx512`]): ReLU, ReLU6 and
//! the residual add applied to each vector of sums as it is stored.

/// The epilogue of [`super::forward_avx512`] as a constant, so that each kind compiles its own
/// kernel: with the kind chosen per store, the kernel of layers without one (LeNet's, in
/// inference) ran 15% slower.
pub(super) mod kind {
    pub const NONE: u8 = 0;
    pub const RELU: u8 = 1;
    pub const RELU6: u8 = 2;
    pub const ADD: u8 = 3;
    pub const ADD_RELU: u8 = 4;
}

/// `a`, the sums of 16 output pixels, with epilogue `E` ([`kind`]) applied as
/// [`crate::kernels::conv::Epilogue::apply`] does (bitwise): `max(a, 0)` gives +0 for NaN and −0 as
/// `v > 0 ? v : 0` does, and `min(6, max(0, a))` keeps NaN and −0 as `relu6` does. The
/// residual's lanes `m` are read at `residual`.
///
/// # Safety
/// The CPU must support AVX-512F; for `ADD` and `ADD_RELU` the lanes `m` of `residual`
/// must be readable.
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn finish_avx512<const E: u8>(
    a: std::arch::x86_64::__m512,
    m: u16,
    residual: *const f32,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let zero = _mm512_setzero_ps();
    // SAFETY: the caller guarantees the lanes `m` at `residual` where they are read.
    let skip = || unsafe { _mm512_maskz_loadu_ps(m, residual) };
    match E {
        kind::RELU => _mm512_max_ps(a, zero),
        kind::RELU6 => _mm512_min_ps(_mm512_set1_ps(6.0), _mm512_max_ps(zero, a)),
        kind::ADD => _mm512_add_ps(a, skip()),
        kind::ADD_RELU => _mm512_max_ps(_mm512_add_ps(a, skip()), zero),
        _ => a,
    }
}
