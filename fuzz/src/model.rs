//! The reference model: which files are open, what each registration (incarnation)
//! counts, and what each operation must return. It holds no fdlend handle; the
//! world keeps it in step and compares.

use fdlend::{Epoch, LendError};
use nix::errno::Errno;
use std::collections::HashMap;
use std::os::fd::{OwnedFd, RawFd};

pub(crate) type Identity = (u64, u64);

/// The kernel's identity (dev, inode) of whatever `fd` names now; `None` if closed.
pub(crate) fn identity(fd: RawFd) -> Option<Identity> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat accepts any fd number (a closed one fails with EBADF), which is
    // why this takes a raw number: no BorrowedFd is made for a number that may be
    // closed. The buffer is a valid, writable `stat`.
    let rc = unsafe { libc::fstat(fd, stat.as_mut_ptr()) };
    if rc != 0 {
        assert_eq!(Errno::last(), Errno::EBADF, "fstat({fd})");
        return None;
    }
    // SAFETY: fstat returned 0, so it filled the whole buffer.
    let stat = unsafe { stat.assume_init() };
    Some((stat.st_dev, stat.st_ino))
}

/// One file the input opened, known by kernel identity.
pub(crate) struct FileRecord {
    fd: RawFd,
    pub(crate) identity: Identity,
    /// The read end of a pipe whose write end is `fd`: EOF there proves the close.
    pipe_read: Option<OwnedFd>,
    pub(crate) open: bool,
    /// A closed file is checked once, when it closes; afterwards its number may be
    /// anything's, and a model file reusing it is checked as its own record.
    checked_closed: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Phase {
    Open,
    Closing,
    /// The slot is free: closed, revoked, or drained into its owner's hands.
    Gone,
}

/// One registration of one file.
pub(crate) struct Incarnation {
    pub(crate) file: usize,
    pub(crate) fd: RawFd,
    pub(crate) epoch: Epoch,
    limit: u32,
    pub(crate) phase: Phase,
    /// Counted loans and raw tokens.
    pub(crate) shared: u32,
    /// Of `shared`, the raw tokens.
    pub(crate) raw: u32,
    pub(crate) locals: u32,
    /// Local loans alive when the close began (what `LocalLoansOutstanding` reports).
    pub(crate) locals_at_close: u32,
    /// `close_now`: its handles count nothing any more.
    pub(crate) revoked: bool,
    /// A `close_async`/`reclaim` future takes the fd at the drain, instead of the
    /// last loan closing it.
    pub(crate) owner_waits: bool,
}

#[derive(Default)]
pub(crate) struct Model {
    pub(crate) files: Vec<FileRecord>,
    pub(crate) incarnations: Vec<Incarnation>,
    /// Per fd number, the least epoch its next registration may have: above every
    /// epoch it had in this input, and at least where `AdvanceEpochs` moved it.
    next_epoch: HashMap<RawFd, u64>,
}

impl Model {
    pub(crate) fn add_file(&mut self, fd: RawFd, pipe_read: Option<OwnedFd>) -> usize {
        let identity = identity(fd).expect("a new fd is open");
        self.files.push(FileRecord {
            fd,
            identity,
            pipe_read,
            open: true,
            checked_closed: false,
        });
        self.files.len() - 1
    }

    /// Epochs only move forward: a registration of `fd` must be at `at_least` or later.
    pub(crate) fn advance_epochs(&mut self, fd: RawFd, at_least: u64) {
        let next = self.next_epoch.entry(fd).or_default();
        *next = (*next).max(at_least);
    }

    pub(crate) fn register(&mut self, file: usize, fd: RawFd, epoch: Epoch, limit: u32) -> usize {
        let next = self.next_epoch.entry(fd).or_default();
        assert!(
            epoch.get() >= *next,
            "fd {fd} registered at epoch {epoch}, below {next}: an epoch came back"
        );
        *next = epoch.get() + 1;
        self.incarnations.push(Incarnation {
            file,
            fd,
            epoch,
            limit,
            phase: Phase::Open,
            shared: 0,
            raw: 0,
            locals: 0,
            locals_at_close: 0,
            revoked: false,
            owner_waits: false,
        });
        self.incarnations.len() - 1
    }

    pub(crate) fn outstanding(&self, inc: usize) -> u32 {
        self.incarnations[inc].shared + self.incarnations[inc].locals
    }

    pub(crate) fn file_of(&mut self, inc: usize) -> &mut FileRecord {
        let file = self.incarnations[inc].file;
        &mut self.files[file]
    }

    /// What taking a brand-new reference (a loan, a pin, a raw token) must do.
    pub(crate) fn expect_new(&self, inc: usize) -> Result<(), LendError> {
        match self.incarnations[inc].phase {
            Phase::Open => self.expect_room(inc),
            Phase::Closing => Err(LendError::Closing {
                fd: self.incarnations[inc].fd,
            }),
            Phase::Gone => Err(self.gone_error(inc)),
        }
    }

    /// What cloning a held reference must do: allowed while closing too.
    pub(crate) fn expect_clone(&self, inc: usize) -> Result<(), LendError> {
        match self.incarnations[inc].phase {
            Phase::Open | Phase::Closing => self.expect_room(inc),
            Phase::Gone => Err(self.gone_error(inc)),
        }
    }

    fn expect_room(&self, inc: usize) -> Result<(), LendError> {
        let incarnation = &self.incarnations[inc];
        // `max_loans` counts loans and raw tokens only, whether or not the owner's
        // own reference is still counted (it is not once a closing owner lets go).
        if incarnation.shared >= incarnation.limit {
            return Err(LendError::Saturated {
                fd: incarnation.fd,
                limit: incarnation.limit,
            });
        }
        Ok(())
    }

    /// A gone incarnation's number is `Stale` if a newer one lends it, else `Closed`.
    fn gone_error(&self, inc: usize) -> LendError {
        let fd = self.incarnations[inc].fd;
        if self
            .incarnations
            .iter()
            .any(|other| other.fd == fd && other.phase != Phase::Gone)
        {
            LendError::Stale { fd }
        } else {
            LendError::Closed { fd }
        }
    }

    pub(crate) fn counted(&mut self, inc: usize) {
        self.incarnations[inc].shared += 1;
    }

    pub(crate) fn raw_lent(&mut self, inc: usize) {
        self.incarnations[inc].shared += 1;
        self.incarnations[inc].raw += 1;
    }

    pub(crate) fn raw_returned(&mut self, inc: usize) {
        if !self.incarnations[inc].revoked {
            self.incarnations[inc].raw -= 1;
        }
        self.released(inc, false);
    }

    /// One reference came back; the last one of a closing file closes it (or hands
    /// it to a waiting owner).
    pub(crate) fn released(&mut self, inc: usize, local: bool) {
        let incarnation = &mut self.incarnations[inc];
        if incarnation.revoked {
            return;
        }
        if local {
            incarnation.locals -= 1;
        } else {
            incarnation.shared -= 1;
        }
        if incarnation.phase == Phase::Closing && self.outstanding(inc) == 0 {
            self.drained(inc);
        }
    }

    /// A close began (the owner let go): it completes now if nothing is lent.
    pub(crate) fn begin_close(&mut self, inc: usize, owner_waits: bool) {
        self.incarnations[inc].owner_waits = owner_waits;
        self.incarnations[inc].locals_at_close = self.incarnations[inc].locals;
        self.incarnations[inc].phase = Phase::Closing;
        if self.outstanding(inc) == 0 {
            self.drained(inc);
        }
    }

    /// A bounded close gave up before the drain: the file is lent again.
    pub(crate) fn reopened(&mut self, inc: usize) {
        let incarnation = &mut self.incarnations[inc];
        assert_eq!(
            incarnation.phase,
            Phase::Closing,
            "only a closing file reopens"
        );
        (incarnation.phase, incarnation.owner_waits) = (Phase::Open, false);
    }

    fn drained(&mut self, inc: usize) {
        self.incarnations[inc].phase = Phase::Gone;
        if !self.incarnations[inc].owner_waits {
            self.file_of(inc).open = false;
        }
    }

    /// Checks every file in the kernel: open ones are still the same file, closed
    /// ones are gone (once, when they close).
    pub(crate) fn check_files(&mut self) {
        for file in &mut self.files {
            let fd = file.fd;
            if file.open {
                assert_eq!(identity(fd), Some(file.identity), "open file {fd} changed");
                if let Some(read) = &file.pipe_read {
                    let read = nix::unistd::read(read, &mut [0; 1]);
                    assert_eq!(read, Err(Errno::EAGAIN), "pipe {fd} is open: no EOF");
                }
            } else if !file.checked_closed {
                assert_ne!(
                    identity(fd),
                    Some(file.identity),
                    "closed file {fd} still open"
                );
                if let Some(read) = &file.pipe_read {
                    assert_eq!(
                        nix::unistd::read(read, &mut [0; 1]),
                        Ok(0),
                        "pipe {fd} closed: EOF"
                    );
                }
                file.checked_closed = true;
            }
        }
    }
}
