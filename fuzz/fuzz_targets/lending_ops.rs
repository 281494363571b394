//! Drives fdlend with an arbitrary sequence of operations on real fds and compares
//! every step with a small model: counts per lender, which operations are refused
//! and why, which tickets are current, and which files are closed (checked in the
//! kernel by fstat identity and pipe EOF, never by fd number). At the end the process
//! must hold no more fds than at the start.

#![no_main]

use arbitrary::Arbitrary;
use fdlend::{CloseFuture, Closing, Epoch, LendError, Lender, LocalLoan, Loan, Reclaim, Ticket};
use libfuzzer_sys::fuzz_target;
use nix::errno::Errno;
use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Keeps an input's fds and handles few, so one run stays in the microseconds.
const MAX_OPS: usize = 128;
const MAX_LENDERS: usize = 4;
const MAX_FILES: usize = 24;
const MAX_HANDLES: usize = 16;

#[derive(Arbitrary, Clone, Copy, Debug)]
enum Kind {
    /// A pipe: its write end is lent; the model keeps the read end to see EOF.
    Pipe,
    Memfd,
}

#[derive(Arbitrary, Clone, Copy, Debug)]
enum CloseMode {
    Close,
    Drop,
    TryClose,
    IntoOwnedFd,
    /// With loans out, another thread returns them while this one blocks.
    CloseWait,
    ReclaimWait,
    CloseNow,
    /// `close_async` or `reclaim`: a future that the input polls or drops later.
    Async { reclaim: bool },
}

#[derive(Arbitrary, Clone, Copy, Debug)]
enum Op {
    NewLender { kind: Kind, max_loans: Option<u8> },
    /// Lends a file the model holds unlent: a reused fd number, or a reclaimed fd.
    LendFile { file: u8, max_loans: Option<u8> },
    /// Registers a lent fd's number again, as if it had been closed behind its
    /// lender's back and reused: must be refused with `SlotLive`.
    RegisterAgain { incarnation: u8 },
    Loan { lender: u8 },
    LocalLoan { lender: u8 },
    ToSend { local: u8 },
    TryClone { loan: u8 },
    DropLoan { loan: u8 },
    DropLocal { local: u8 },
    Ticket { lender: u8 },
    LoanTicket { loan: u8 },
    Pin { ticket: u8 },
    LendFd { lender: u8 },
    IntoRaw { loan: u8 },
    ReturnFd { token: u8, via_from_raw: bool },
    /// `return_fd` of an fd that was never lent: must be `NotLent`.
    ReturnUnlent { file: u8 },
    Close { lender: u8, mode: CloseMode },
    PollWait { wait: u8 },
    DropWait { wait: u8 },
    /// Opens a file, which takes the lowest free number: often one just closed.
    OpenFile { kind: Kind },
    CloseFile { file: u8 },
}

type Identity = (u64, u64);

/// The kernel's identity of whatever `fd` names now, or `None` if it is closed.
fn identity(fd: RawFd) -> Option<Identity> {
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

/// One file the model knows, by kernel identity.
struct FileRecord {
    fd: RawFd,
    identity: Identity,
    /// The read end of a pipe whose write end is `fd`: EOF there proves the close.
    pipe_read: Option<OwnedFd>,
    open: bool,
    /// Closed files are checked once, when they close; afterwards their number may be
    /// anything's, and the file reusing it is checked as its own record.
    checked_closed: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Open,
    Closing,
    /// The slot is free: closed, revoked, or drained into its owner's hands.
    Gone,
}

/// One registration of one file.
struct Incarnation {
    file: usize,
    fd: RawFd,
    epoch: Epoch,
    limit: u32,
    phase: Phase,
    /// Counted loans and raw tokens.
    shared: u32,
    locals: u32,
    /// `close_now`: its handles count nothing any more.
    revoked: bool,
    /// A `close_async`/`reclaim` future takes the fd when drained, instead of the
    /// last loan closing it.
    owner_waits: bool,
}

enum Wait {
    Close(CloseFuture),
    Reclaim(Reclaim),
}

#[derive(Default)]
struct World {
    files: Vec<FileRecord>,
    incarnations: Vec<Incarnation>,
    lenders: Vec<(Lender, usize)>,
    loans: Vec<(Loan, usize)>,
    locals: Vec<(LocalLoan, usize)>,
    tokens: Vec<(BorrowedFd<'static>, usize)>,
    tickets: Vec<(Ticket, usize)>,
    closings: Vec<(Closing, usize)>,
    waits: Vec<(Wait, usize)>,
    /// Open files that nothing lends, with their record.
    unlent: Vec<(OwnedFd, usize)>,
}

fn pick(len: usize, choice: u8) -> Option<usize> {
    (len > 0).then(|| usize::from(choice) % len)
}

fn limit_of(max_loans: Option<u8>) -> u32 {
    max_loans.map_or(Lender::MAX_LOANS, |n| u32::from(n % 5))
}

fn unit<T>(result: &Result<T, LendError>) -> Result<(), LendError> {
    result.as_ref().map(|_| ()).map_err(|error| *error)
}

impl World {
    fn open_file(&mut self, kind: Kind) -> Option<OwnedFd> {
        if self.files.len() >= MAX_FILES {
            return None;
        }
        let (fd, pipe_read) = match kind {
            Kind::Pipe => {
                let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).unwrap();
                (write, Some(read))
            }
            Kind::Memfd => {
                (nix::sys::memfd::memfd_create("fdlend-fuzz", nix::sys::memfd::MFdFlags::empty()).unwrap(), None)
            }
        };
        let identity = identity(fd.as_raw_fd()).expect("a new fd is open");
        self.files.push(FileRecord { fd: fd.as_raw_fd(), identity, pipe_read, open: true, checked_closed: false });
        Some(fd)
    }

    fn lend(&mut self, fd: OwnedFd, file: usize, max_loans: Option<u8>) {
        let limit = limit_of(max_loans);
        let lender = match max_loans {
            Some(_) => Lender::with_max_loans(fd, limit),
            None => Lender::new(fd),
        }
        .expect("a file nothing lends registers");
        assert_eq!(lender.max_loans(), limit);
        let (fd, epoch) = (lender.as_raw_fd(), lender.epoch());
        let incarnation = Incarnation {
            file,
            fd,
            epoch,
            limit,
            phase: Phase::Open,
            shared: 0,
            locals: 0,
            revoked: false,
            owner_waits: false,
        };
        self.incarnations.push(incarnation);
        self.lenders.push((lender, self.incarnations.len() - 1));
    }

    /// What taking a brand-new reference (a loan, a pin) must do.
    fn expect_new(&self, at: usize) -> Result<(), LendError> {
        let incarnation = &self.incarnations[at];
        match incarnation.phase {
            Phase::Open => self.expect_room(at),
            Phase::Closing => Err(LendError::Closing { fd: incarnation.fd }),
            Phase::Gone => Err(self.gone_error(incarnation.fd)),
        }
    }

    /// What cloning a held reference must do: allowed while closing too.
    fn expect_clone(&self, at: usize) -> Result<(), LendError> {
        match self.incarnations[at].phase {
            Phase::Open | Phase::Closing => self.expect_room(at),
            Phase::Gone => Err(self.gone_error(self.incarnations[at].fd)),
        }
    }

    fn expect_room(&self, at: usize) -> Result<(), LendError> {
        let incarnation = &self.incarnations[at];
        // The word's limit is max_loans + 1, counting the owner's reference. A closing
        // owner lets go of that reference once no local loan holds it, and then one
        // clone beyond max_loans fits (the limit documented for `with_max_loans` is
        // exceeded by one while closing; reported, modelled as it is).
        let owner = incarnation.phase == Phase::Open || incarnation.locals > 0;
        if incarnation.shared + u32::from(owner) > incarnation.limit {
            return Err(LendError::Saturated { fd: incarnation.fd, limit: incarnation.limit });
        }
        Ok(())
    }

    /// A gone incarnation's number is `Stale` if a newer one lends it, else `Closed`.
    fn gone_error(&self, fd: RawFd) -> LendError {
        if self.incarnations.iter().any(|other| other.fd == fd && other.phase != Phase::Gone) {
            LendError::Stale { fd }
        } else {
            LendError::Closed { fd }
        }
    }

    fn counted(&mut self, at: usize) {
        self.incarnations[at].shared += 1;
    }

    /// One reference of `at` came back; the last one of a closing file closes it.
    fn released(&mut self, at: usize, local: bool) {
        let incarnation = &mut self.incarnations[at];
        if incarnation.revoked {
            return;
        }
        if local {
            incarnation.locals -= 1;
        } else {
            incarnation.shared -= 1;
        }
        if incarnation.phase == Phase::Closing && incarnation.shared + incarnation.locals == 0 {
            incarnation.phase = Phase::Gone;
            if !incarnation.owner_waits {
                let file = incarnation.file;
                self.files[file].open = false;
            }
        }
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::NewLender { kind, max_loans } => {
                if self.lenders.len() < MAX_LENDERS {
                    if let Some(fd) = self.open_file(kind) {
                        self.lend(fd, self.files.len() - 1, max_loans);
                    }
                }
            }
            Op::LendFile { file, max_loans } => {
                if let Some(at) = pick(self.unlent.len(), file).filter(|_| self.lenders.len() < MAX_LENDERS) {
                    let (fd, file) = self.unlent.swap_remove(at);
                    self.lend(fd, file, max_loans);
                }
            }
            Op::RegisterAgain { incarnation } => {
                let live: Vec<usize> =
                    (0..self.incarnations.len()).filter(|&at| self.incarnations[at].phase != Phase::Gone).collect();
                if let Some(at) = pick(live.len(), incarnation) {
                    let fd = self.incarnations[live[at]].fd;
                    // SAFETY: `fd` is open (its incarnation is open or draining) but this
                    // `OwnedFd` is a second owner: it is never closed, because the
                    // refused registration hands it back and `into_raw_fd` forgets it.
                    let second = unsafe { OwnedFd::from_raw_fd(fd) };
                    match Lender::new(second) {
                        Ok(lender) => panic!("{fd} registered twice: {lender:?}"),
                        Err(refused) => {
                            assert_eq!(refused.error(), LendError::SlotLive { fd });
                            let _ = refused.into_fd().into_raw_fd();
                        }
                    }
                }
            }
            Op::Loan { lender } | Op::LendFd { lender } => {
                if let Some(at) = pick(self.lenders.len(), lender).filter(|_| self.loans.len() < MAX_HANDLES) {
                    let (lender, inc) = &self.lenders[at];
                    let inc = *inc;
                    let expected = self.expect_new(inc);
                    if let Op::Loan { .. } = op {
                        let loan = lender.loan();
                        assert_eq!(unit(&loan), expected, "{op:?}");
                        if let Ok(loan) = loan {
                            self.loans.push((loan, inc));
                            self.counted(inc);
                        }
                    } else if self.tokens.len() < MAX_HANDLES {
                        // SAFETY: every token goes into `tokens` and is returned once (a
                        // `ReturnFd` op or the teardown), or forgotten unused when its
                        // lender `close_now`s.
                        let token = unsafe { lender.lend_fd() };
                        assert_eq!(unit(&token), expected, "{op:?}");
                        if let Ok(token) = token {
                            self.tokens.push((token, inc));
                            self.counted(inc);
                        }
                    }
                }
            }
            Op::LocalLoan { lender } => {
                if let Some(at) = pick(self.lenders.len(), lender).filter(|_| self.locals.len() < MAX_HANDLES) {
                    let (lender, inc) = &self.lenders[at];
                    self.locals.push((lender.local_loan(), *inc));
                    self.incarnations[*inc].locals += 1;
                }
            }
            Op::ToSend { local } => {
                if let Some(at) = pick(self.locals.len(), local).filter(|_| self.loans.len() < MAX_HANDLES) {
                    let (local, inc) = &self.locals[at];
                    let inc = *inc;
                    let loan = local.to_send();
                    assert_eq!(unit(&loan), self.expect_clone(inc), "{op:?}");
                    if let Ok(loan) = loan {
                        self.loans.push((loan, inc));
                        self.counted(inc);
                    }
                }
            }
            Op::TryClone { loan } => {
                if let Some(at) = pick(self.loans.len(), loan).filter(|_| self.loans.len() < MAX_HANDLES) {
                    let (loan, inc) = &self.loans[at];
                    let inc = *inc;
                    let clone = loan.try_clone();
                    assert_eq!(unit(&clone), self.expect_clone(inc), "{op:?}");
                    if let Ok(clone) = clone {
                        self.loans.push((clone, inc));
                        self.counted(inc);
                    }
                }
            }
            Op::DropLoan { loan } => {
                if let Some(at) = pick(self.loans.len(), loan) {
                    let (loan, inc) = self.loans.swap_remove(at);
                    drop(loan);
                    self.released(inc, false);
                }
            }
            Op::DropLocal { local } => {
                if let Some(at) = pick(self.locals.len(), local) {
                    let (local, inc) = self.locals.swap_remove(at);
                    drop(local);
                    self.released(inc, true);
                }
            }
            Op::Ticket { lender } => {
                if let Some(at) = pick(self.lenders.len(), lender).filter(|_| self.tickets.len() < MAX_HANDLES) {
                    let (lender, inc) = &self.lenders[at];
                    self.tickets.push((lender.ticket(), *inc));
                }
            }
            Op::LoanTicket { loan } => {
                if let Some(at) = pick(self.loans.len(), loan).filter(|_| self.tickets.len() < MAX_HANDLES) {
                    let (loan, inc) = &self.loans[at];
                    self.tickets.push((loan.ticket(), *inc));
                }
            }
            Op::Pin { ticket } => {
                if let Some(at) = pick(self.tickets.len(), ticket).filter(|_| self.loans.len() < MAX_HANDLES) {
                    let (ticket, inc) = self.tickets[at];
                    let loan = ticket.pin();
                    assert_eq!(unit(&loan), self.expect_new(inc), "{op:?}");
                    if let Ok(loan) = loan {
                        self.loans.push((loan, inc));
                        self.counted(inc);
                    }
                }
            }
            Op::IntoRaw { loan } => {
                let unrevoked: Vec<usize> =
                    (0..self.loans.len()).filter(|&at| !self.incarnations[self.loans[at].1].revoked).collect();
                if let Some(at) = pick(unrevoked.len(), loan).filter(|_| self.tokens.len() < MAX_HANDLES) {
                    let (loan, inc) = self.loans.swap_remove(unrevoked[at]);
                    self.tokens.push((loan.into_raw(), inc));
                }
            }
            Op::ReturnFd { token, via_from_raw } => {
                if let Some(at) = pick(self.tokens.len(), token) {
                    let (token, inc) = self.tokens.swap_remove(at);
                    if via_from_raw {
                        // SAFETY: the token came from `lend_fd`/`into_raw`, is removed from
                        // `tokens` here so it is returned once, and its incarnation was not
                        // revoked (`close_now` drops its tokens from the list).
                        let loan = unsafe { Loan::from_raw(token) }.expect("a lent token rebuilds its loan");
                        assert_eq!(loan.epoch(), self.incarnations[inc].epoch);
                        self.loans.push((loan, inc));
                    } else {
                        // SAFETY: as for `from_raw` above.
                        unsafe { fdlend::return_fd(token) }.expect("a lent token returns");
                        self.released(inc, false);
                    }
                }
            }
            Op::ReturnUnlent { file } => {
                if let Some(at) = pick(self.unlent.len(), file) {
                    let fd = self.unlent[at].0.as_raw_fd();
                    // SAFETY: deliberately outside the contract's first bullet: this fd
                    // was never lent. `return_fd` documents that it detects exactly this
                    // (nothing lent under the number) and then touches no count.
                    let returned = unsafe { fdlend::return_fd(BorrowedFd::borrow_raw(fd)) };
                    assert_eq!(returned, Err(LendError::NotLent { fd }));
                }
            }
            Op::Close { lender, mode } => {
                if let Some(at) = pick(self.lenders.len(), lender) {
                    self.close(at, mode);
                }
            }
            Op::PollWait { wait } => {
                if let Some(at) = pick(self.waits.len(), wait) {
                    self.poll_wait(at);
                }
            }
            Op::DropWait { wait } => {
                if let Some(at) = pick(self.waits.len(), wait) {
                    let (wait, inc) = self.waits.swap_remove(at);
                    drop(wait);
                    self.wait_dropped(inc);
                }
            }
            Op::OpenFile { kind } => {
                if let Some(fd) = self.open_file(kind) {
                    self.unlent.push((fd, self.files.len() - 1));
                }
            }
            Op::CloseFile { file } => {
                if let Some(at) = pick(self.unlent.len(), file) {
                    let (fd, file) = self.unlent.swap_remove(at);
                    drop(fd);
                    self.files[file].open = false;
                }
            }
        }
    }

    fn close(&mut self, at: usize, mode: CloseMode) {
        let (lender, inc) = self.lenders.swap_remove(at);
        let (fd, file) = (self.incarnations[inc].fd, self.incarnations[inc].file);
        let (shared, locals) = (self.incarnations[inc].shared, self.incarnations[inc].locals);
        let unlent = shared + locals == 0;
        match mode {
            CloseMode::Close | CloseMode::Drop => {
                let closing = match mode {
                    CloseMode::Close => Some(lender.close()),
                    _ => {
                        drop(lender);
                        None
                    }
                };
                self.begin_close(inc, unlent);
                if let Some(closing) = closing {
                    self.closings.push((closing, inc));
                }
            }
            CloseMode::TryClose => match lender.try_close() {
                Ok(result) => {
                    assert!(unlent, "try_close closed with {shared} loans and {locals} local loans out");
                    result.expect("close(2) of an open fd");
                    self.begin_close(inc, true);
                }
                Err(lender) => {
                    assert!(!unlent, "try_close refused with nothing lent");
                    self.lenders.push((lender, inc));
                }
            },
            CloseMode::IntoOwnedFd => match lender.into_owned_fd() {
                Ok(owned) => {
                    assert!(unlent, "into_owned_fd succeeded with {shared} loans and {locals} local loans out");
                    self.incarnations[inc].phase = Phase::Gone;
                    self.unlent.push((owned, file));
                }
                Err(lender) => {
                    assert!(!unlent, "into_owned_fd refused with nothing lent");
                    self.lenders.push((lender, inc));
                }
            },
            CloseMode::CloseWait if locals > 0 => {
                let error = lender.close_wait().expect_err("close_wait with local loans out");
                let inner = error.get_ref().and_then(|e| e.downcast_ref::<LendError>()).copied();
                assert_eq!(inner, Some(LendError::LocalLoansOutstanding { fd, count: locals as usize }));
                self.begin_close(inc, false);
            }
            CloseMode::ReclaimWait if locals > 0 => {
                let lender = lender.reclaim_wait().expect_err("reclaim_wait with local loans out");
                self.lenders.push((lender, inc));
            }
            CloseMode::CloseWait | CloseMode::ReclaimWait => {
                let returner = self.hand_off(inc);
                if let CloseMode::CloseWait = mode {
                    lender.close_wait().expect("close(2) of an open fd");
                    self.files[file].open = false;
                } else {
                    self.unlent.push((lender.reclaim_wait().expect("no local loans"), file));
                }
                self.incarnations[inc].phase = Phase::Gone;
                if let Some(returner) = returner {
                    returner.join().unwrap();
                }
            }
            CloseMode::CloseNow => {
                // SAFETY: the model marks every handle of this incarnation revoked, and
                // revoked handles are only dropped: no I/O, fstat or token return
                // (its tokens leave the list right here).
                unsafe { lender.close_now() }.expect("close(2) of an open fd");
                let incarnation = &mut self.incarnations[inc];
                (incarnation.phase, incarnation.revoked) = (Phase::Gone, true);
                self.files[file].open = false;
                self.tokens.retain(|&(_, of)| of != inc);
            }
            CloseMode::Async { reclaim } => {
                let wait = if reclaim { Wait::Reclaim(lender.reclaim()) } else { Wait::Close(lender.close_async()) };
                let incarnation = &mut self.incarnations[inc];
                incarnation.phase = if unlent { Phase::Gone } else { Phase::Closing };
                incarnation.owner_waits = true;
                self.waits.push((wait, inc));
            }
        }
    }

    /// A deferred close began: it happens now if nothing is lent, else at the drain.
    fn begin_close(&mut self, inc: usize, unlent: bool) {
        if unlent {
            self.incarnations[inc].phase = Phase::Gone;
            let file = self.incarnations[inc].file;
            self.files[file].open = false;
        } else {
            self.incarnations[inc].phase = Phase::Closing;
        }
    }

    /// Moves `inc`'s loans and tokens to a thread that gives them back, so a blocking
    /// close on this thread has something to wait for.
    fn hand_off(&mut self, inc: usize) -> Option<std::thread::JoinHandle<()>> {
        let loans: Vec<Loan> = extract(&mut self.loans, inc);
        let tokens: Vec<BorrowedFd<'static>> = extract(&mut self.tokens, inc);
        self.incarnations[inc].shared = 0;
        if loans.is_empty() && tokens.is_empty() {
            return None;
        }
        Some(std::thread::spawn(move || {
            drop(loans);
            for token in tokens {
                // SAFETY: each token left `tokens` above, so this is its one return,
                // and its incarnation is not revoked (its lender is closing, not
                // `close_now`ing).
                unsafe { fdlend::return_fd(token) }.expect("a lent token returns");
            }
        }))
    }

    fn poll_wait(&mut self, at: usize) {
        let inc = self.waits[at].1;
        let drained = self.incarnations[inc].phase == Phase::Gone;
        let mut cx = Context::from_waker(Waker::noop());
        let file = self.incarnations[inc].file;
        match &mut self.waits[at].0 {
            Wait::Close(future) => match Pin::new(future).poll(&mut cx) {
                Poll::Ready(result) => {
                    assert!(drained, "close_async resolved with loans out");
                    result.expect("close(2) of an open fd");
                    self.files[file].open = false;
                }
                Poll::Pending => assert!(!drained, "close_async pending after the drain"),
            },
            Wait::Reclaim(future) => match Pin::new(future).poll(&mut cx) {
                Poll::Ready(owned) => {
                    assert!(drained, "reclaim resolved with loans out");
                    self.unlent.push((owned, file));
                }
                Poll::Pending => assert!(!drained, "reclaim pending after the drain"),
            },
        }
        if drained {
            self.waits.swap_remove(at);
            self.incarnations[inc].owner_waits = false;
        }
    }

    /// A dropped future closes a drained fd itself, else leaves the close to the last
    /// loan.
    fn wait_dropped(&mut self, inc: usize) {
        let incarnation = &mut self.incarnations[inc];
        incarnation.owner_waits = false;
        if incarnation.phase == Phase::Gone {
            let file = incarnation.file;
            self.files[file].open = false;
        }
    }

    /// Compares the world with the model.
    fn check(&mut self) {
        for (lender, inc) in &self.lenders {
            let incarnation = &self.incarnations[*inc];
            assert_eq!(lender.outstanding(), (incarnation.shared + incarnation.locals) as usize, "{lender:?}");
            assert_eq!(fdlend::current_epoch(lender.as_fd()), Some(incarnation.epoch));
        }
        for (ticket, inc) in &self.tickets {
            assert_eq!(ticket.is_current(), self.incarnations[*inc].phase != Phase::Gone, "{ticket:?}");
        }
        for (loan, inc) in &self.loans {
            let incarnation = &self.incarnations[*inc];
            assert_eq!(loan.is_current(), !incarnation.revoked, "{loan:?}");
            if !incarnation.revoked {
                assert_eq!(identity(loan.as_raw_fd()), Some(self.files[incarnation.file].identity), "{loan:?}");
            }
        }
        for (closing, inc) in &self.closings {
            let closed = !self.files[self.incarnations[*inc].file].open;
            assert_eq!(closing.result().map(|result| result.is_ok()), closed.then_some(true), "{closing:?}");
        }
        for file in &mut self.files {
            if file.open {
                assert_eq!(identity(file.fd), Some(file.identity), "open file {} changed", file.fd);
                if let Some(read) = &file.pipe_read {
                    assert_eq!(nix::unistd::read(read, &mut [0; 1]), Err(Errno::EAGAIN), "pipe {} open", file.fd);
                }
            } else if !file.checked_closed {
                assert_ne!(identity(file.fd), Some(file.identity), "closed file {} still open", file.fd);
                if let Some(read) = &file.pipe_read {
                    assert_eq!(nix::unistd::read(read, &mut [0; 1]), Ok(0), "pipe {} closed: EOF", file.fd);
                }
                file.checked_closed = true;
            }
        }
    }

    /// Gives everything back, and checks that every file the input opened is closed.
    fn teardown(mut self) {
        while let Some((wait, inc)) = self.waits.pop() {
            drop(wait);
            self.wait_dropped(inc);
        }
        while let Some((token, inc)) = self.tokens.pop() {
            // SAFETY: popped, so returned once; revoked tokens left the list at `close_now`.
            unsafe { fdlend::return_fd(token) }.expect("a lent token returns");
            self.released(inc, false);
        }
        while let Some((loan, inc)) = self.loans.pop() {
            drop(loan);
            self.released(inc, false);
        }
        while let Some((local, inc)) = self.locals.pop() {
            drop(local);
            self.released(inc, true);
        }
        while !self.lenders.is_empty() {
            self.close(0, CloseMode::Drop);
        }
        while let Some((fd, file)) = self.unlent.pop() {
            drop(fd);
            self.files[file].open = false;
        }
        self.check();
        assert!(self.files.iter().all(|file| !file.open));
        assert!(self.incarnations.iter().all(|incarnation| incarnation.phase == Phase::Gone));
    }
}

fn extract<T>(handles: &mut Vec<(T, usize)>, inc: usize) -> Vec<T> {
    let (theirs, ours) = std::mem::take(handles).into_iter().partition(|(_, of)| *of == inc);
    *handles = ours;
    theirs.into_iter().map(|(handle, _)| handle).collect()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fuzz_target!(|ops: Vec<Op>| {
    let before = open_fds();
    let mut world = World::default();
    for op in ops.into_iter().take(MAX_OPS) {
        world.step(op);
        world.check();
    }
    world.teardown();
    assert!(open_fds() <= before, "fds leaked: {} before, {} after", before, open_fds());
});
