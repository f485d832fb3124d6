//! The AMX body of [`super::gemm_bf16`]: `tdpbf16ps` on 16 × 16 f32 tiles (issue 24).
//!
//! Why AMX: one `tdpbf16ps` multiplies a 16 × 32 bf16 tile by a 32 × 16 one into 16 × 16 f32
//! sums, 8,192 multiply-adds per instruction, where an AVX-512 FMA does 16. The register
//! block is 2 × 2 output tiles (32 × 32 of C) with two A and two B tiles: the eight tile
//! registers, four products per four loads. Operands come packed by the caller (1 KiB per
//! tile, contiguous: see `super::pack_a` / `super::pack_b`), C is loaded from and stored to
//! the destination (or a scratch block at ragged edges).
//!
//! Linux hands out the 8 KiB of tile state only to a process that asks for it
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`), once; each thread then loads the
//! tile configuration before its first tile instruction and releases it at the end of a task,
//! so a context switch outside the kernel saves no tile data.

use std::arch::asm;
use std::sync::OnceLock;

/// Whether the CPU has AMX-TILE and AMX-BF16 and the kernel granted the tile state.
pub fn available() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| cpu_has_amx_bf16() && request_tile_permission())
}

fn cpu_has_amx_bf16() -> bool {
    // CPUID leaf 7, sub-leaf 0: EDX bit 22 = AMX-BF16, bit 24 = AMX-TILE (leaf 7 exists
    // where the highest leaf is ≥ 7).
    if std::arch::x86_64::__cpuid(0).eax < 7 {
        return false;
    }
    let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
    edx & (1 << 22) != 0 && edx & (1 << 24) != 0
}

fn request_tile_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain syscall with integer arguments; it changes no memory of ours.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

/// The tile configuration: palette 1, all eight tiles 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

fn config() -> TileConfig {
    let mut c = [0u8; 64];
    c[0] = 1; // palette
    for t in 0..8 {
        // colsb (u16 little-endian) at 16 + 2t, rows at 48 + t.
        c[16 + 2 * t] = 64;
        c[48 + t] = 16;
    }
    TileConfig(c)
}

/// Tile state loaded for this thread for as long as the guard lives.
pub struct Tiles(());

impl Tiles {
    /// Loads the configuration. Only call when [`available`] said yes.
    pub fn load() -> Tiles {
        let cfg = config();
        // SAFETY: AMX is present and permitted ([`available`]); cfg is a valid palette-1
        // configuration, 64 bytes, aligned.
        unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly)) };
        Tiles(())
    }

    /// `C (32 × 32 f32 at c, row stride c_stride bytes) = C + A · B`, or `= A · B` when
    /// `fresh` (C is not read: no load of a block of dst that is about to be overwritten), over
    /// `chunks` k-chunks of 32: A's two 16-row tiles at a0, a1 and B's two 16-column tiles at
    /// b0, b1, each advancing 1 KiB (512 bf16) per chunk.
    ///
    /// # Safety
    /// The pointers must cover 32 rows of C at that stride and `chunks` KiB of each panel.
    pub unsafe fn block(&self, c: *mut f32, c_stride: usize, a: [*const u16; 2], b: [*const u16; 2], chunks: usize, fresh: bool) {
        let c1 = c.add(16);
        let (c2, c3) = (c.byte_add(16 * c_stride), c.byte_add(16 * c_stride).add(16));
        if fresh {
            asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
        } else {
            asm!(
                "tileloadd tmm0, [{c0} + {s}*1]",
                "tileloadd tmm1, [{c1} + {s}*1]",
                "tileloadd tmm2, [{c2} + {s}*1]",
                "tileloadd tmm3, [{c3} + {s}*1]",
                c0 = in(reg) c, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3, s = in(reg) c_stride,
                options(nostack, readonly)
            );
        }
        let (mut a0, mut a1, mut b0, mut b1) = (a[0], a[1], b[0], b[1]);
        for _ in 0..chunks {
            asm!(
                "tileloadd tmm4, [{a0} + {s}*1]",
                "tileloadd tmm6, [{b0} + {s}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {s}*1]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a1} + {s}*1]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a0, a1 = in(reg) a1, b0 = in(reg) b0, b1 = in(reg) b1, s = in(reg) 64usize,
                options(nostack, readonly)
            );
            (a0, a1, b0, b1) = (a0.add(512), a1.add(512), b0.add(512), b1.add(512));
        }
        asm!(
            "tilestored [{c0} + {s}*1], tmm0",
            "tilestored [{c1} + {s}*1], tmm1",
            "tilestored [{c2} + {s}*1], tmm2",
            "tilestored [{c3} + {s}*1], tmm3",
            c0 = in(reg) c, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3, s = in(reg) c_stride,
            options(nostack)
        );
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: the configuration was loaded by `load`; releasing returns the tiles to
        // their initial state.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}
