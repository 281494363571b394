//! The lender close modes and the futures some of them leave behind, driven on
//! real handles and mirrored in the model.

use crate::model::{identity, Phase};
use crate::world::{extract, Token, World};
use crate::CloseMode;
use fdlend::{CloseFuture, LendError, Reclaim};
use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

/// A `close_async` or `reclaim` future, polled or dropped by later ops.
pub(crate) enum Wait {
    Close(CloseFuture),
    Reclaim(Reclaim),
}

impl World {
    pub(crate) fn close(&mut self, at: usize, mode: CloseMode) {
        let (lender, inc) = self.lenders.swap_remove(at);
        let (fd, locals) = (
            self.model.incarnations[inc].fd,
            self.model.incarnations[inc].locals,
        );
        let unlent = self.model.outstanding(inc) == 0;
        match mode {
            CloseMode::Close => {
                self.closings.push((lender.close(), inc));
                self.model.begin_close(inc, false);
            }
            CloseMode::Drop => {
                drop(lender);
                self.model.begin_close(inc, false);
            }
            CloseMode::TryClose => match lender.try_close() {
                Ok(result) => {
                    assert!(unlent, "try_close closed a lent fd");
                    result.expect("close(2) of an open fd");
                    self.model.begin_close(inc, false);
                }
                Err(lender) => {
                    assert!(!unlent, "try_close refused with nothing lent");
                    self.lenders.push((lender, inc));
                }
            },
            CloseMode::IntoOwnedFd => match lender.into_owned_fd() {
                Ok(owned) => {
                    assert!(unlent, "into_owned_fd took back a lent fd");
                    self.model.incarnations[inc].phase = Phase::Gone;
                    self.unlent.push((owned, self.model.incarnations[inc].file));
                }
                Err(lender) => {
                    assert!(!unlent, "into_owned_fd refused with nothing lent");
                    self.lenders.push((lender, inc));
                }
            },
            CloseMode::CloseWait if locals > 0 => {
                let error = lender
                    .close_wait()
                    .expect_err("close_wait with local loans out");
                let inner = error
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<LendError>())
                    .copied();
                let count = locals as usize;
                assert_eq!(inner, Some(LendError::LocalLoansOutstanding { fd, count }));
                self.model.begin_close(inc, false);
            }
            CloseMode::ReclaimWait if locals > 0 => {
                let lender = lender
                    .reclaim_wait()
                    .expect_err("reclaim_wait with local loans out");
                self.lenders.push((lender, inc));
            }
            CloseMode::CloseWaitTimeout if locals > 0 => {
                // As `close_wait`: deferred to the local loans, and said so.
                let error = lender
                    .close_wait_timeout(Duration::ZERO)
                    .expect("refused at once, not timed out")
                    .expect_err("close_wait_timeout with local loans out");
                let count = locals as usize;
                let refusal = LendError::LocalLoansOutstanding { fd, count };
                assert_eq!(LendError::from_io(&error), Some(refusal));
                self.model.begin_close(inc, false);
            }
            CloseMode::CloseWaitTimeout => match lender.close_wait_timeout(Duration::ZERO) {
                Ok(result) => {
                    assert!(unlent, "a bounded close closed a lent fd");
                    result.expect("close(2) of an open fd");
                    self.model.begin_close(inc, false);
                }
                Err(timed_out) => {
                    assert!(!unlent, "a bounded close timed out with nothing lent");
                    let outstanding = self.model.outstanding(inc) as usize;
                    assert_eq!(timed_out.outstanding(), outstanding);
                    let lender = timed_out.into_inner();
                    assert_eq!(lender.outstanding(), outstanding);
                    self.lenders.push((lender, inc));
                }
            },
            CloseMode::CloseWait => {
                let returner = self.hand_off(inc);
                lender.close_wait().expect("close(2) of an open fd");
                self.model.begin_close(inc, false);
                if let Some(returner) = returner {
                    returner.join().unwrap();
                }
            }
            CloseMode::ReclaimWait => {
                let returner = self.hand_off(inc);
                let owned = lender.reclaim_wait().expect("no local loans");
                self.model.incarnations[inc].phase = Phase::Gone;
                self.unlent.push((owned, self.model.incarnations[inc].file));
                if let Some(returner) = returner {
                    returner.join().unwrap();
                }
            }
            CloseMode::CloseNow => {
                // SAFETY: the model marks every handle of this incarnation revoked, and
                // revoked handles are only dropped: no I/O, no fstat, and no token
                // return by number (its tokens leave the list right here; `RawLoan`s,
                // which name their file, are given back later by `ReturnRevoked`).
                unsafe { lender.close_now() }.expect("close(2) of an open fd");
                let incarnation = &mut self.model.incarnations[inc];
                (incarnation.phase, incarnation.revoked) = (Phase::Gone, true);
                self.model.file_of(inc).open = false;
                for token in extract(&mut self.tokens, inc) {
                    if let Token::Raw(token) = token {
                        self.revoked_raw.push(token);
                    }
                }
            }
            CloseMode::Async { reclaim } => {
                let wait = if reclaim {
                    Wait::Reclaim(lender.reclaim())
                } else {
                    Wait::Close(lender.close_async())
                };
                self.waits.push((wait, inc));
                self.model.begin_close(inc, true);
            }
        }
    }

    /// Moves `inc`'s loans and tokens to a thread that gives them back, so a blocking
    /// close on this thread has something to wait for.
    pub(crate) fn hand_off(&mut self, inc: usize) -> Option<JoinHandle<()>> {
        let loans = extract(&mut self.loans, inc);
        let tokens = extract(&mut self.tokens, inc);
        self.model.incarnations[inc].shared = 0;
        self.model.incarnations[inc].raw = 0;
        if loans.is_empty() && tokens.is_empty() {
            return None;
        }
        Some(std::thread::spawn(move || {
            drop(loans);
            for token in tokens {
                // SAFETY: each token left `tokens` above, so this is its one return;
                // its lender is closing, not `close_now`ing, so it is not revoked.
                unsafe { token.give_back() }.expect("a lent token returns");
            }
        }))
    }

    pub(crate) fn poll_wait(&mut self, at: usize) {
        let inc = self.waits[at].1;
        let incarnation = &self.model.incarnations[inc];
        let drained = incarnation.phase == Phase::Gone;
        // On this (the owner's) thread, with its local loans alive, waiting could
        // never end: the future refuses and hands the close to the last local loan.
        let own_loans = (incarnation.locals > 0).then_some(LendError::LocalLoansOutstanding {
            fd: incarnation.fd,
            count: incarnation.locals_at_close as usize,
        });
        let mut cx = Context::from_waker(Waker::noop());
        let ready = match &mut self.waits[at].0 {
            Wait::Close(future) => Pin::new(future).poll(&mut cx).map(|result| match result {
                Ok(()) => self.model.file_of(inc).open = false,
                Err(error) => assert_eq!(LendError::from_io(&error), own_loans),
            }),
            Wait::Reclaim(future) => Pin::new(future).poll(&mut cx).map(|result| match result {
                Ok(owned) => {
                    assert_eq!(
                        identity(owned.as_raw_fd()),
                        Some(self.model.file_of(inc).identity)
                    );
                    self.unlent.push((owned, self.model.incarnations[inc].file));
                }
                Err(error) => assert_eq!(Some(error), own_loans),
            }),
        };
        if own_loans.is_some() {
            assert!(
                ready.is_ready(),
                "a wait on its own local loans refuses at once"
            );
            self.waits.swap_remove(at);
            self.model.incarnations[inc].owner_waits = false;
            return;
        }
        assert_eq!(
            ready.is_ready(),
            drained,
            "a close/reclaim future is ready exactly once drained"
        );
        if drained {
            self.waits.swap_remove(at);
            self.model.incarnations[inc].owner_waits = false;
        }
    }

    /// `abort()`: the lender back, lending again, unless the loans drained (then the
    /// future's outcome) or local loans still share the owner's reference (then the
    /// close is theirs, as when the future is dropped).
    pub(crate) fn abort_wait(&mut self, wait: Wait, inc: usize) {
        let incarnation = &self.model.incarnations[inc];
        let drained = incarnation.phase == Phase::Gone;
        let own_loans = (incarnation.locals > 0).then_some(LendError::LocalLoansOutstanding {
            fd: incarnation.fd,
            count: incarnation.locals_at_close as usize,
        });
        let outstanding = self.model.outstanding(inc) as usize;
        let back = match wait {
            Wait::Close(future) => future.abort().map_err(|result| match result {
                Ok(()) => {
                    assert!(drained, "an abort closed an undrained fd");
                    self.model.file_of(inc).open = false;
                }
                Err(error) => assert_eq!(LendError::from_io(&error), own_loans),
            }),
            Wait::Reclaim(future) => future.abort().map_err(|result| match result {
                Ok(owned) => {
                    assert!(drained, "an abort took an undrained fd");
                    assert_eq!(
                        identity(owned.as_raw_fd()),
                        Some(self.model.file_of(inc).identity)
                    );
                    self.unlent.push((owned, self.model.incarnations[inc].file));
                }
                Err(error) => assert_eq!(Some(error), own_loans),
            }),
        };
        match back {
            Ok(lender) => {
                assert!(!drained && own_loans.is_none(), "handed back too late");
                assert_eq!(lender.outstanding(), outstanding);
                self.model.reopened(inc);
                self.lenders.push((lender, inc));
            }
            Err(()) if drained => self.model.incarnations[inc].owner_waits = false,
            Err(()) => {
                assert!(own_loans.is_some(), "not drained, yet not handed back");
                self.wait_dropped(inc);
            }
        }
    }

    /// A dropped future closes a drained fd itself, else leaves it to the last loan.
    pub(crate) fn wait_dropped(&mut self, inc: usize) {
        self.model.incarnations[inc].owner_waits = false;
        if self.model.incarnations[inc].phase == Phase::Gone {
            self.model.file_of(inc).open = false;
        }
    }
}
