//! Lending a glommio [`DmaFile`]'s fd to other threads and other executors without
//! `dup()`.
//!
//! A glommio server keeps its `DmaFile`s on executor threads; when a request's answer
//! is "read this range later, on another thread" (or `sendfile` it), the hand-off
//! today is a `dup()`. Two halves replace it:
//!
//! - [`LentDmaFile`] (the owner's side) wraps the `DmaFile` and lends its one fd:
//!   loans, local loans, tickets, regions and raw tokens behave exactly as for a
//!   [`Lender`](crate::Lender) (it is one, see [`LentDmaFile::lender`]), while the
//!   executor keeps using the `DmaFile` itself through [`LentDmaFile::dma`].
//! - On the other side, a [`Loan`](crate::Loan) or a
//!   [`LentRegion`](crate::LentRegion) is read on *any* executor without stalling
//!   it: [`BlockingReader`] runs `pread` on that executor's blocking-thread pool
//!   (crates.io glommio as is); `BorrowedDmaFile` (feature `glommio-ring`, which
//!   needs fdlend's patched glommio: README, "glommio") reads through that
//!   executor's own ring with glommio's `read_at`, `read_at_aligned` and
//!   `read_many`. Neither opens nor closes anything; dropping one returns its loan.
//!
//! Closing is async and well-ordered: [`LentDmaFile::close`] waits, without polling,
//! until every loan is back (each reader holds one), then closes through glommio's
//! own `DmaFile::close`; [`LentDmaFile::close_timeout`] gives up after a deadline and
//! hands the file back. The fd is only ever closed by glommio, on the owner's
//! executor, behind any op glommio still has queued for it; dropping the wrapper with
//! loans out closes from a task on the executor once the last loan is back. In every
//! path the fd is closed exactly once; SAFETY.md (section "glommio adapter") says
//! why.
//!
//! ```no_run
//! use fdlend::glommio::{BlockingReader, LentDmaFile};
//! use glommio::{io::DmaFile, LocalExecutorBuilder, Placement};
//!
//! let executor = || {
//!     LocalExecutorBuilder::new(Placement::Unbound)
//!         .io_memory(2 << 20)
//!         .make()
//!         .unwrap()
//! };
//! executor().run(async {
//!     let file = LentDmaFile::new(DmaFile::open("data.bin").await.unwrap()).unwrap();
//!     let region = file.region(4096, 8192).unwrap();
//!     let other = std::thread::spawn(move || {
//!         // A second executor reads the region on its blocking pool, never
//!         // stalling (with `glommio-ring`: `BorrowedDmaFile`, through its ring).
//!         executor().run(async move {
//!             let reader = BlockingReader::new(region);
//!             reader.read_region().await.unwrap()
//!         }) // dropping `reader` returned the loan
//!     });
//!     // The owner keeps reading through glommio meanwhile.
//!     let head = file.dma().read_at(0, 512).await.unwrap();
//!     assert!(head.len() <= 512);
//!     // Resolves once the other executor's loan is back, then closes through glommio.
//!     file.close().await.unwrap();
//!     assert_eq!(other.join().unwrap().len(), 8192);
//! });
//! ```
//!
//! # Polled I/O and the first file opened on a device (glommio issue #605)
//!
//! glommio decides, per block device **and per thread** (its device table is
//! thread-local), at the first `DmaFile` opened on that device on that thread, whether
//! reads go to its polled (`IORING_SETUP_IOPOLL`) ring: it reads the first block of
//! that file on the poll ring and turns polling off if the read fails
//! (`Reactor::probe_iopoll_support`); the verdict is cached for the thread's life.
//! Measured on this project's machine (a virtio disk with no poll queues,
//! `/sys/block/vda/queue/io_poll` = 0, Linux 6.18):
//! - **first file non-empty**: the polled read reaches the device and fails with
//!   `EOPNOTSUPP`, polling is turned off, and every read goes to the main
//!   (interrupt-driven) ring and works;
//! - **first file empty** (`DmaFile::open` of an empty file, or a read-write create):
//!   the probe reads at end of file, which completes without reaching the device, so
//!   it *passes*; polling is cached on and every later glommio read on that device
//!   from that thread, of any file, fails with `EOPNOTSUPP` (errno 95)
//!   (`tests/glommio_probe.rs` shows both);
//! - **first file write-only** (`DmaFile::create`): the probe fails with `EBADF`, so
//!   polling is off for the device (glommio #670): safe here, slower on an NVMe disk
//!   with poll queues.
//!
//! So on each executor thread, make the first `DmaFile` opened on a device a
//! non-empty file opened readable (or open a write-only one first), and keep
//! `O_DIRECT` files on a real disk (on tmpfs glommio skips `O_DIRECT` and the probe).
//! `BorrowedDmaFile::new` never probes with an empty file: an empty lent file is
//! read through the main ring and leaves the thread's verdict unset. A file whose
//! first block is a hole can fool the probe the same way an empty one does.
//!
//! Lent fds carry glommio's `O_DIRECT` flag: `pread`/`sendfile` on other threads need
//! aligned buffers, offsets and lengths (the [`fdlend::io`](crate::io) region reads
//! widen for you, and so does [`BlockingReader`]); a `BorrowedDmaFile` aligns through
//! glommio itself.
//!
//! # The `glommio-ring` feature and the patched glommio
//!
//! glommio 0.9 has no way to build a `DmaFile` over an fd it does not own (only
//! `open` by path, which makes a new fd, and `dup`). `BorrowedDmaFile` needs
//! `DmaFile::from_raw_fd`/`into_raw_fd`, added by fdlend's patch to glommio 0.9.0
//! (`vendor/glommio/FDLEND-PATCH.md` in the repository). A build with `glommio-ring`
//! against crates.io glommio fails with an error that names the `[patch.crates-io]`
//! line to add. Everything else here builds with crates.io glommio.

mod blocking;
#[cfg(feature = "glommio-ring")]
mod borrowed;
#[cfg(feature = "glommio-ring")]
mod checked_iovs;
mod closer;
mod lent;
#[cfg(feature = "glommio-ring")]
mod patch;
mod source;

pub use blocking::BlockingReader;
#[cfg(feature = "glommio-ring")]
pub use borrowed::{BorrowDmaError, BorrowedDmaFile, ReadMany};
pub use lent::{LentDmaFile, RegisterDmaError};
pub use source::BorrowSource;

#[cfg(doc)]
use ::glommio::io::DmaFile;
