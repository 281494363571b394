//! A build error that says what to do when the `glommio-ring` feature meets a
//! glommio without `DmaFile::from_raw_fd`.
//!
//! `BorrowedDmaFile` calls `DmaFile::from_raw_fd`, `into_raw_fd` and `is_pollable`.
//! glommio patched as in `vendor/glommio/FDLEND-PATCH.md` has them as inherent
//! methods, which method resolution picks before any trait method. crates.io
//! glommio 0.9 lacks them, so the calls fall through to [`UnpatchedGlommio`], whose
//! bound is never met: the build fails with the message below instead of E0599.

use ::glommio::io::DmaFile;
use std::os::fd::RawFd;

/// Implemented by nothing: naming it as a bound turns a build against unpatched
/// glommio into an error that tells the user what to add to their `Cargo.toml`.
#[diagnostic::on_unimplemented(
    message = "fdlend's `glommio-ring` feature needs glommio with `DmaFile::from_raw_fd` (fdlend's patched glommio 0.9.0); crates.io glommio 0.9 lacks it",
    label = "this glommio has no `DmaFile::from_raw_fd`",
    note = "add to your own Cargo.toml (the workspace root's):\n    [patch.crates-io]\n    glommio = {{ git = \"https://github.com/fdlend/fdlend\" }}\n(it is glommio 0.9.0 plus fdlend's patch, vendored in that repository), or drop the `glommio-ring` feature and read lent files with `fdlend::glommio::BlockingReader`"
)]
pub(super) trait GlommioHasFromRawFd {}

/// Stand-ins for the patched glommio's inherent `DmaFile` methods, reached only when
/// they are missing; every one requires [`GlommioHasFromRawFd`], so none can build.
#[allow(dead_code)] // shadowed by the inherent methods whenever the build succeeds
pub(super) trait UnpatchedGlommio: Sized {
    /// Never built: see the module docs.
    #[allow(clippy::missing_safety_doc)] // uncallable: its bound has no impl
    async unsafe fn from_raw_fd(fd: RawFd) -> ::glommio::Result<Self, ()>
    where
        Self: GlommioHasFromRawFd;

    fn into_raw_fd(self) -> RawFd
    where
        Self: GlommioHasFromRawFd;

    fn is_pollable(&self) -> bool
    where
        Self: GlommioHasFromRawFd;
}

/// `DmaFile` alone: the stand-ins apply to nothing else (a receiver such as
/// `&Rc<DmaFile>` must still auto-deref to the inherent methods).
pub(super) trait IsDmaFile {}

impl IsDmaFile for DmaFile {}

// Generic, so the bounds below are not trivially false (rustc rejects those).
impl<T: IsDmaFile> UnpatchedGlommio for T {
    async unsafe fn from_raw_fd(_: RawFd) -> ::glommio::Result<Self, ()>
    where
        Self: GlommioHasFromRawFd,
    {
        unreachable!("GlommioHasFromRawFd has no implementation")
    }

    fn into_raw_fd(self) -> RawFd
    where
        Self: GlommioHasFromRawFd,
    {
        unreachable!("GlommioHasFromRawFd has no implementation")
    }

    fn is_pollable(&self) -> bool
    where
        Self: GlommioHasFromRawFd,
    {
        unreachable!("GlommioHasFromRawFd has no implementation")
    }
}
