//! The real side: fds and fdlend handles, driven by [`Op`]s, compared with the model
//! after every step.

use crate::close::Wait;
use crate::model::{identity, Model, Phase};
use crate::{CloseMode, Kind, Op, MAX_FILES, MAX_HANDLES, MAX_LENDERS};
use fdlend::{Closing, LendError, Lender, Loan, LocalLoan, RawLoan, Ticket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};

/// A raw token, in either form.
#[derive(Clone, Copy)]
pub(crate) enum Token {
    /// From `lend_fd`.
    Fd(BorrowedFd<'static>),
    /// From `lend_raw` or `Loan::into_raw`.
    Raw(RawLoan),
}

impl Token {
    /// Gives the token's count back.
    ///
    /// # Safety
    /// As `return_fd`/`return_raw`: the token has not been returned yet (or the
    /// caller expects the refusal of a double return), and is not used after.
    pub(crate) unsafe fn give_back(self) -> Result<(), LendError> {
        match self {
            // SAFETY: the caller's contract above.
            Token::Fd(token) => unsafe { fdlend::return_fd(token) },
            // SAFETY: the caller's contract above.
            Token::Raw(token) => unsafe { fdlend::return_raw(token) },
        }
    }
}

/// Every live handle, each beside the model incarnation (or file) it belongs to.
#[derive(Default)]
pub struct World {
    pub(crate) model: Model,
    pub(crate) lenders: Vec<(Lender, usize)>,
    pub(crate) loans: Vec<(Loan, usize)>,
    pub(crate) locals: Vec<(LocalLoan, usize)>,
    pub(crate) tokens: Vec<(Token, usize)>,
    /// `RawLoan`s of `close_now`ed files, to be given back later.
    pub(crate) revoked_raw: Vec<RawLoan>,
    pub(crate) tickets: Vec<(Ticket, usize)>,
    pub(crate) closings: Vec<(Closing, usize)>,
    pub(crate) waits: Vec<(Wait, usize)>,
    /// Open files that nothing lends, beside their model file.
    pub(crate) unlent: Vec<(OwnedFd, usize)>,
}

fn pick(len: usize, choice: u8) -> Option<usize> {
    (len > 0).then(|| usize::from(choice) % len)
}

fn unit<T>(result: &Result<T, LendError>) -> Result<(), LendError> {
    result.as_ref().map(|_| ()).map_err(|error| *error)
}

/// Takes `inc`'s handles out of `handles`.
pub(crate) fn extract<T>(handles: &mut Vec<(T, usize)>, inc: usize) -> Vec<T> {
    let (theirs, ours) = std::mem::take(handles)
        .into_iter()
        .partition(|(_, of)| *of == inc);
    *handles = ours;
    theirs.into_iter().map(|(handle, _)| handle).collect()
}

impl World {
    /// Runs one operation, asserting what it returned against the model.
    pub fn step(&mut self, op: Op) {
        let lender = |choice| pick(self.lenders.len(), choice);
        let loan = |choice| pick(self.loans.len(), choice);
        let loan_room = self.loans.len() < MAX_HANDLES;
        match op {
            Op::NewLender { kind, max_loans } if self.lenders.len() < MAX_LENDERS => {
                if let Some((fd, file)) = self.open_file(kind) {
                    self.lend(fd, file, max_loans);
                }
            }
            Op::LendFile { file, max_loans } if self.lenders.len() < MAX_LENDERS => {
                if let Some(at) = pick(self.unlent.len(), file) {
                    let (fd, file) = self.unlent.swap_remove(at);
                    self.lend(fd, file, max_loans);
                }
            }
            Op::RegisterAgain { incarnation } => self.register_again(incarnation),
            Op::Loan { lender: choice } => {
                if let Some(at) = lender(choice).filter(|_| loan_room) {
                    let (lender, inc) = &self.lenders[at];
                    let (loan, inc) = (lender.loan(), *inc);
                    assert_eq!(unit(&loan), self.model.expect_new(inc), "{op:?}");
                    self.add_loan(loan, inc);
                }
            }
            Op::LendFd { lender: choice } => {
                if let Some(at) = lender(choice).filter(|_| self.tokens.len() < MAX_HANDLES) {
                    let (lender, inc) = &self.lenders[at];
                    // SAFETY: every token goes into `tokens` and is returned once (by a
                    // `ReturnFd` op or the teardown), or forgotten unused when its
                    // lender `close_now`s.
                    let (token, inc) = (unsafe { lender.lend_fd() }, *inc);
                    assert_eq!(unit(&token), self.model.expect_new(inc), "{op:?}");
                    if let Ok(token) = token {
                        self.tokens.push((Token::Fd(token), inc));
                        self.model.raw_lent(inc);
                    }
                }
            }
            Op::LendRaw { lender: choice } => {
                if let Some(at) = lender(choice).filter(|_| self.tokens.len() < MAX_HANDLES) {
                    let (lender, inc) = &self.lenders[at];
                    let (token, inc) = (lender.lend_raw(), *inc);
                    assert_eq!(unit(&token), self.model.expect_new(inc), "{op:?}");
                    if let Ok(token) = token {
                        assert_eq!(token.epoch(), self.model.incarnations[inc].epoch);
                        assert!(token.is_current());
                        self.tokens.push((Token::Raw(token), inc));
                        self.model.raw_lent(inc);
                    }
                }
            }
            Op::ReturnTwice { token } => {
                let alone: Vec<usize> = (0..self.tokens.len())
                    .filter(|&at| {
                        let incarnation = &self.model.incarnations[self.tokens[at].1];
                        !incarnation.revoked && incarnation.raw == 1
                    })
                    .collect();
                if let Some(at) = pick(alone.len(), token) {
                    let (token, inc) = self.tokens.swap_remove(alone[at]);
                    let fd = self.model.incarnations[inc].fd;
                    // SAFETY: left `tokens` just above, so this is its one return.
                    unsafe { token.give_back() }.expect("a lent token returns");
                    self.model.raw_returned(inc);
                    // SAFETY: the deliberate second return: no other raw token of this
                    // file is out (and nothing ran in between), so it is refused.
                    let again = unsafe { token.give_back() };
                    assert_eq!(again, Err(LendError::NotLent { fd }), "{op:?}");
                }
            }
            Op::ReturnRevoked { token } => {
                if let Some(at) = pick(self.revoked_raw.len(), token) {
                    let token = self.revoked_raw.swap_remove(at);
                    assert!(!token.is_current());
                    // SAFETY: left `revoked_raw` just above, so this is its one return;
                    // it counts down its own revoked record.
                    unsafe { fdlend::return_raw(token) }.expect("a revoked token returns");
                }
            }
            Op::AdvanceEpochs { file, near_the_top } => {
                if let Some(at) = pick(self.unlent.len(), file) {
                    let fd = self.unlent[at].0.as_raw_fd();
                    // Past the old 32-bit wrap, or high in the 64-bit range but far
                    // enough from the top that no run can use it up.
                    let to = if near_the_top {
                        u64::MAX - (1 << 40)
                    } else {
                        (1 << 32) - 2
                    };
                    fdlend::testing::advance_epochs(fd, to).expect("a number in range");
                    self.model.advance_epochs(fd, to);
                }
            }
            Op::LocalLoan { lender: choice } => {
                if let Some(at) = lender(choice).filter(|_| self.locals.len() < MAX_HANDLES) {
                    let (lender, inc) = &self.lenders[at];
                    self.locals.push((lender.local_loan(), *inc));
                    self.model.incarnations[*inc].locals += 1;
                }
            }
            Op::ToSend { local } => {
                if let Some(at) = pick(self.locals.len(), local).filter(|_| loan_room) {
                    let (local, inc) = &self.locals[at];
                    let (loan, inc) = (local.to_send(), *inc);
                    assert_eq!(unit(&loan), self.model.expect_clone(inc), "{op:?}");
                    self.add_loan(loan, inc);
                }
            }
            Op::TryClone { loan: choice } => {
                if let Some(at) = loan(choice).filter(|_| loan_room) {
                    let (loan, inc) = &self.loans[at];
                    let (clone, inc) = (loan.try_clone(), *inc);
                    assert_eq!(unit(&clone), self.model.expect_clone(inc), "{op:?}");
                    self.add_loan(clone, inc);
                }
            }
            Op::DropLoan { loan: choice } => {
                if let Some(at) = loan(choice) {
                    let (loan, inc) = self.loans.swap_remove(at);
                    drop(loan);
                    self.model.released(inc, false);
                }
            }
            Op::DropLocal { local } => {
                if let Some(at) = pick(self.locals.len(), local) {
                    let (local, inc) = self.locals.swap_remove(at);
                    drop(local);
                    self.model.released(inc, true);
                }
            }
            Op::Ticket { lender: choice } => {
                if let Some(at) = lender(choice).filter(|_| self.tickets.len() < MAX_HANDLES) {
                    let (lender, inc) = &self.lenders[at];
                    self.tickets.push((lender.ticket(), *inc));
                }
            }
            Op::LoanTicket { loan: choice } => {
                if let Some(at) = loan(choice).filter(|_| self.tickets.len() < MAX_HANDLES) {
                    let (loan, inc) = &self.loans[at];
                    self.tickets.push((loan.ticket(), *inc));
                }
            }
            Op::Pin { ticket } => {
                if let Some(at) = pick(self.tickets.len(), ticket).filter(|_| loan_room) {
                    let (ticket, inc) = self.tickets[at];
                    let loan = ticket.pin();
                    assert_eq!(unit(&loan), self.model.expect_new(inc), "{op:?}");
                    self.add_loan(loan, inc);
                }
            }
            Op::IntoRaw { loan } => {
                let unrevoked: Vec<usize> = (0..self.loans.len())
                    .filter(|&at| !self.model.incarnations[self.loans[at].1].revoked)
                    .collect();
                if let Some(at) =
                    pick(unrevoked.len(), loan).filter(|_| self.tokens.len() < MAX_HANDLES)
                {
                    let (loan, inc) = self.loans.swap_remove(unrevoked[at]);
                    let token = loan.into_raw().expect("far below the raw limit");
                    self.tokens.push((Token::Raw(token), inc));
                    self.model.incarnations[inc].raw += 1;
                }
            }
            Op::ReturnFd {
                token,
                via_from_raw,
            } => {
                if let Some(at) = pick(self.tokens.len(), token) {
                    let (token, inc) = self.tokens.swap_remove(at);
                    match token {
                        Token::Raw(token) if via_from_raw => {
                            // SAFETY: the token came from `lend_raw`/`into_raw`, left
                            // `tokens` just above so it is returned once, and is not
                            // revoked (`close_now` moves those to `revoked_raw`).
                            let loan = unsafe { Loan::from_raw(token) }.expect("a lent token");
                            assert_eq!(loan.epoch(), self.model.incarnations[inc].epoch);
                            self.loans.push((loan, inc));
                            self.model.incarnations[inc].raw -= 1;
                        }
                        token => {
                            // SAFETY: as for `from_raw` above.
                            unsafe { token.give_back() }.expect("a lent token returns");
                            self.model.raw_returned(inc);
                        }
                    }
                }
            }
            Op::ReturnUnlent { file } => {
                if let Some(at) = pick(self.unlent.len(), file) {
                    let fd = self.unlent[at].0.as_raw_fd();
                    // SAFETY: `unlent` keeps `fd` open, and the token is gone by the end
                    // of this block, long before any op could close it.
                    let token = unsafe { BorrowedFd::borrow_raw(fd) };
                    // SAFETY: deliberately outside the contract's first bullet: this fd
                    // was never lent. `return_fd` documents that it detects exactly this
                    // (nothing lent under the number) and then touches no count.
                    let returned = unsafe { fdlend::return_fd(token) };
                    assert_eq!(returned, Err(LendError::NotLent { fd }));
                }
            }
            Op::Close {
                lender: choice,
                mode,
            } => {
                if let Some(at) = lender(choice) {
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
            Op::AbortWait { wait } => {
                if let Some(at) = pick(self.waits.len(), wait) {
                    let (wait, inc) = self.waits.swap_remove(at);
                    self.abort_wait(wait, inc);
                }
            }
            Op::OpenFile { kind } => {
                if let Some(opened) = self.open_file(kind) {
                    self.unlent.push(opened);
                }
            }
            Op::CloseFile { file } => {
                if let Some(at) = pick(self.unlent.len(), file) {
                    let (fd, file) = self.unlent.swap_remove(at);
                    drop(fd);
                    self.model.files[file].open = false;
                }
            }
            Op::NewLender { .. } | Op::LendFile { .. } => {}
        }
    }

    fn open_file(&mut self, kind: Kind) -> Option<(OwnedFd, usize)> {
        if self.model.files.len() >= MAX_FILES {
            return None;
        }
        let (fd, pipe_read) = match kind {
            Kind::Pipe => {
                let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).unwrap();
                (write, Some(read))
            }
            Kind::Memfd => {
                let flags = nix::sys::memfd::MFdFlags::empty();
                (
                    nix::sys::memfd::memfd_create("fdlend-fuzz", flags).unwrap(),
                    None,
                )
            }
        };
        let file = self.model.add_file(fd.as_raw_fd(), pipe_read);
        Some((fd, file))
    }

    fn lend(&mut self, fd: OwnedFd, file: usize, max_loans: Option<u8>) {
        let limit = max_loans.map_or(Lender::MAX_LOANS, |n| u32::from(n % 5));
        let lender = match max_loans {
            Some(_) => Lender::with_max_loans(fd, limit),
            None => Lender::new(fd),
        }
        .expect("a file nothing lends registers");
        assert_eq!(lender.max_loans(), limit);
        let inc = self
            .model
            .register(file, lender.as_raw_fd(), lender.epoch(), limit);
        self.lenders.push((lender, inc));
    }

    fn add_loan(&mut self, loan: Result<Loan, LendError>, inc: usize) {
        if let Ok(loan) = loan {
            self.loans.push((loan, inc));
            self.model.counted(inc);
        }
    }

    fn register_again(&mut self, choice: u8) {
        let incarnations = &self.model.incarnations;
        let live: Vec<usize> = (0..incarnations.len())
            .filter(|&at| incarnations[at].phase != Phase::Gone)
            .collect();
        if let Some(at) = pick(live.len(), choice) {
            let fd = incarnations[live[at]].fd;
            // SAFETY: `fd` is open (its incarnation is open or draining). This second
            // `OwnedFd` of it is never closed: the refused registration hands it back
            // and `into_raw_fd` forgets it.
            let second = unsafe { OwnedFd::from_raw_fd(fd) };
            match Lender::new(second) {
                Ok(lender) => panic!("fd {fd} registered twice: {lender:?}"),
                Err(refused) => {
                    assert_eq!(refused.error(), LendError::SlotLive { fd });
                    let _ = refused.into_fd().into_raw_fd();
                }
            }
        }
    }

    /// Compares every handle and file with the model.
    pub fn check(&mut self) {
        let model = &self.model;
        for (lender, inc) in &self.lenders {
            assert_eq!(
                lender.outstanding(),
                model.outstanding(*inc) as usize,
                "{lender:?}"
            );
            assert_eq!(
                fdlend::current_epoch(lender.as_fd()),
                Some(model.incarnations[*inc].epoch)
            );
        }
        for (ticket, inc) in &self.tickets {
            assert_eq!(
                ticket.is_current(),
                model.incarnations[*inc].phase != Phase::Gone,
                "{ticket:?}"
            );
        }
        for (loan, inc) in &self.loans {
            let incarnation = &model.incarnations[*inc];
            assert_eq!(loan.is_current(), !incarnation.revoked, "{loan:?}");
            if !incarnation.revoked {
                let file = &model.files[incarnation.file];
                assert_eq!(identity(loan.as_raw_fd()), Some(file.identity), "{loan:?}");
            }
        }
        for (closing, inc) in &self.closings {
            let closed = !model.files[model.incarnations[*inc].file].open;
            let result = closing
                .result()
                .map(|result| result.expect("close(2) of an open fd"));
            assert_eq!(result.is_some(), closed, "{closing:?}");
        }
        self.model.check_files();
    }

    /// Gives everything back and checks that every file the input opened is closed.
    pub fn teardown(mut self) {
        while let Some((wait, inc)) = self.waits.pop() {
            drop(wait);
            self.wait_dropped(inc);
        }
        while let Some((token, inc)) = self.tokens.pop() {
            // SAFETY: popped, so returned once; revoked tokens left the list at
            // `close_now`.
            unsafe { token.give_back() }.expect("a lent token returns");
            self.model.raw_returned(inc);
        }
        while let Some(token) = self.revoked_raw.pop() {
            // SAFETY: popped, so returned once; it counts down its revoked record.
            unsafe { fdlend::return_raw(token) }.expect("a revoked token returns");
        }
        while let Some((loan, inc)) = self.loans.pop() {
            drop(loan);
            self.model.released(inc, false);
        }
        while let Some((local, inc)) = self.locals.pop() {
            drop(local);
            self.model.released(inc, true);
        }
        while !self.lenders.is_empty() {
            self.close(0, CloseMode::Drop);
        }
        while let Some((fd, file)) = self.unlent.pop() {
            drop(fd);
            self.model.files[file].open = false;
        }
        self.check();
        assert!(self.model.files.iter().all(|file| !file.open));
        assert!(self
            .model
            .incarnations
            .iter()
            .all(|inc| inc.phase == Phase::Gone));
    }
}
