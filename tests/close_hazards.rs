//! Closing from inside user code and from the owner's own thread: a `Waker` that owns
//! the last loan can be replaced or dropped by the close futures without deadlocking
//! (no lock is held while it drops), and every wait that could never end on the
//! owner's thread (its local loans alive there) returns a typed error at once, while
//! the close itself goes to the last local loan, exactly once.

mod common;

use common::{pipe, write_end, write_through, Parker, WriteEnd};
use fdlend::{LendError, Lender, Loan};
use std::fs::File;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Wake, Waker};
use std::time::Duration;

/// A waker that owns a loan: dropping the waker returns the loan. `std::task::Wake`
/// is safe to implement, so any user can build one.
struct LoanWaker {
    _loan: Mutex<Option<Loan>>,
}

impl Wake for LoanWaker {
    fn wake(self: Arc<Self>) {}
}

fn waker_owning(loan: Loan) -> Waker {
    Waker::from(Arc::new(LoanWaker {
        _loan: Mutex::new(Some(loan)),
    }))
}

/// Runs `body` on its own thread and fails (instead of hanging the suite) if it
/// has not finished within a minute: a deadlock shows as that failure.
fn finishes<T: Send + 'static>(what: &str, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || done.send(body()).unwrap());
    finished
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what} deadlocked"))
}

/// A lent pipe's write end, closed by `close`, whose future was polled once with a
/// waker that owns the file's only loan: the future now stores that waker, and only
/// it keeps the file open. Returns the read end and the pending future.
fn pending_on_a_waker_owning_the_last_loan<F: Future + Unpin>(
    close: impl FnOnce(Lender) -> F,
) -> (File, F) {
    let (read, write) = pipe();
    let lender = Lender::try_from(write).unwrap();
    let waker = waker_owning(lender.loan().unwrap());
    let mut future = close(lender);
    let polled = Pin::new(&mut future).poll(&mut Context::from_waker(&waker));
    assert!(polled.is_pending(), "the loan is out");
    drop(waker);
    assert_eq!(
        write_end(&read),
        WriteEnd::Open,
        "the stored waker holds the loan"
    );
    (read, future)
}

#[test]
fn a_dropped_reclaim_drops_a_waker_owning_the_last_loan_without_deadlock() {
    let read = finishes("dropping the Reclaim", || {
        let (read, reclaim) = pending_on_a_waker_owning_the_last_loan(Lender::reclaim);
        // The drop hands the close to the last loan, which is the waker's: it drains
        // (and closes) while the Reclaim gives up its waker.
        drop(reclaim);
        read
    });
    assert_eq!(write_end(&read), WriteEnd::Closed, "closed once");
}

#[test]
fn a_close_future_repolled_with_a_new_waker_drops_the_old_one_without_deadlock() {
    let read = finishes("re-polling the CloseFuture", || {
        let (read, mut close) = pending_on_a_waker_owning_the_last_loan(Lender::close_async);
        // Replacing the stored waker drops it, and with it the last loan: the drain
        // wakes the new waker and the next poll closes.
        let parker = Parker::new();
        assert!(parker.poll(&mut close).is_pending());
        assert_eq!(parker.wakes(), 1, "the drain woke the new waker");
        assert!(matches!(parker.poll(&mut close), Poll::Ready(Ok(()))));
        read
    });
    assert_eq!(write_end(&read), WriteEnd::Closed);
}

#[test]
fn a_closing_polled_with_a_new_waker_drops_the_old_one_without_deadlock() {
    let read = finishes("re-polling Closing", || {
        let (read, mut closing) = pending_on_a_waker_owning_the_last_loan(Lender::close);
        let parker = Parker::new();
        // The old waker's loan was the last: the deferred close happens right in
        // this poll (on this thread), which then finds it done or is woken.
        let _ = parker.poll(&mut closing);
        assert!(matches!(closing.result(), Some(Ok(()))));
        read
    });
    assert_eq!(write_end(&read), WriteEnd::Closed);
}

/// How many of this process's fds are the pipe `read` belongs to (either end), as
/// `/proc/self/fd` lists them: each links to `pipe:[inode]`. `None` under Miri,
/// which emulates no `/proc`.
fn pipe_ends_open(read: &File) -> Option<usize> {
    if cfg!(miri) {
        return None;
    }
    let link = format!("pipe:[{}]", nix::sys::stat::fstat(read).unwrap().st_ino);
    let entries = std::fs::read_dir("/proc/self/fd").unwrap();
    Some(
        entries
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy() == link)
            .count(),
    )
}

#[test]
fn a_dropped_closing_drops_a_waker_owning_the_last_loan_and_the_fd_closes() {
    let read = finishes("dropping Closing", || {
        let (read, closing) = pending_on_a_waker_owning_the_last_loan(Lender::close);
        assert_eq!(pipe_ends_open(&read).unwrap_or(2), 2, "both ends open");
        // Its waker must not stay behind in the file's close signal: it owns the
        // last loan, so the fd would never close.
        drop(closing);
        read
    });
    assert_eq!(write_end(&read), WriteEnd::Closed);
    assert_eq!(
        pipe_ends_open(&read).unwrap_or(1),
        1,
        "only the read end is left"
    );
}

/// A waker whose *clone* gives back the last loan (a `RawWakerVTable` is user code
/// too): cloning it while holding the close lock would deadlock on that lock.
struct CloneDropsLoan(Mutex<Option<Loan>>);

static CLONE_DROPS_LOAN: RawWakerVTable =
    RawWakerVTable::new(clone_drops_loan, |_| {}, |_| {}, |_| {});

/// # Safety
/// `data` points at a live `CloneDropsLoan` (`waker_cloning_drops` makes it so).
unsafe fn clone_drops_loan(data: *const ()) -> RawWaker {
    // SAFETY: by this function's contract.
    let holder = unsafe { &*data.cast::<CloneDropsLoan>() };
    let loan = holder.0.lock().unwrap().take();
    drop(loan);
    RawWaker::new(data, &CLONE_DROPS_LOAN)
}

type CloseOutcome = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

#[test]
fn a_waker_whose_clone_drops_the_last_loan_does_not_deadlock_the_close() {
    for close in [
        |lender: Lender| Box::pin(lender.close_async()) as CloseOutcome,
        |lender: Lender| Box::pin(lender.close()) as CloseOutcome,
    ] {
        let read = finishes(
            "polling with a waker whose clone drops the loan",
            move || {
                let (read, write) = pipe();
                let lender = Lender::try_from(write).unwrap();
                let holder = Box::new(CloneDropsLoan(Mutex::new(Some(lender.loan().unwrap()))));
                let data: *const CloneDropsLoan = &*holder;
                // SAFETY: the vtable's functions only read `holder`, which outlives the
                // waker and every clone of it (all dropped before `holder` below).
                let waker =
                    unsafe { Waker::from_raw(RawWaker::new(data.cast(), &CLONE_DROPS_LOAN)) };
                let mut future = close(lender);
                // The poll clones the waker, which returns the last loan: the fd drains
                // and the same poll (or the next) finds it closed.
                let mut cx = Context::from_waker(&waker);
                let polled = future.as_mut().poll(&mut cx);
                let polled = match polled {
                    Poll::Ready(result) => result,
                    Poll::Pending => match future.as_mut().poll(&mut cx) {
                        Poll::Ready(result) => result,
                        Poll::Pending => panic!("the loan is back, yet the close is pending"),
                    },
                };
                polled.expect("close(2)");
                drop(future);
                drop(waker);
                drop(holder);
                read
            },
        );
        assert_eq!(write_end(&read), WriteEnd::Closed);
    }
}

/// A lender of a pipe's write end with one local loan alive on this thread.
fn lent_with_a_local_loan() -> (std::fs::File, Lender, fdlend::LocalLoan) {
    let (read, write) = pipe();
    let lender = Lender::try_from(write).unwrap();
    let local = lender.local_loan();
    (read, lender, local)
}

fn own_loans_error(fd: i32) -> LendError {
    LendError::LocalLoansOutstanding { fd, count: 1 }
}

#[test]
fn closing_wait_on_the_owners_thread_with_local_loans_is_refused_and_closes_later() {
    let (read, lender, local) = lent_with_a_local_loan();
    let fd = lender.as_raw_fd();
    let closing = lender.close();
    let error = closing.wait().unwrap_err();
    assert_eq!(LendError::from_io(&error), Some(own_loans_error(fd)));
    write_through(&local, b"l");
    assert_eq!(write_end(&read), WriteEnd::Open);
    drop(local);
    assert_eq!(
        write_end(&read),
        WriteEnd::Closed,
        "the local loan closed it"
    );
}

#[test]
fn awaiting_closing_on_the_owners_thread_with_local_loans_is_refused() {
    let (read, lender, local) = lent_with_a_local_loan();
    let fd = lender.as_raw_fd();
    let mut closing = lender.close();
    let parker = Parker::new();
    let Poll::Ready(Err(error)) = parker.poll(&mut closing) else {
        panic!("awaiting Closing here would never end")
    };
    assert_eq!(LendError::from_io(&error), Some(own_loans_error(fd)));
    drop(local);
    assert_eq!(write_end(&read), WriteEnd::Closed);
    assert!(matches!(closing.result(), Some(Ok(()))));
}

#[test]
fn close_async_on_the_owners_thread_with_local_loans_is_refused() {
    let (read, lender, local) = lent_with_a_local_loan();
    let fd = lender.as_raw_fd();
    let error = Parker::new().block_on(lender.close_async()).unwrap_err();
    assert_eq!(LendError::from_io(&error), Some(own_loans_error(fd)));
    assert_eq!(write_end(&read), WriteEnd::Open);
    drop(local);
    assert_eq!(
        write_end(&read),
        WriteEnd::Closed,
        "handed to the local loan"
    );
}

#[test]
fn reclaim_on_the_owners_thread_with_local_loans_is_refused() {
    let (read, lender, local) = lent_with_a_local_loan();
    let fd = lender.as_raw_fd();
    let error = Parker::new().block_on(lender.reclaim()).unwrap_err();
    assert_eq!(error, own_loans_error(fd));
    drop(local);
    assert_eq!(
        write_end(&read),
        WriteEnd::Closed,
        "handed to the local loan"
    );
}

#[test]
fn reclaim_wait_on_the_owners_thread_with_local_loans_hands_the_lender_back() {
    let (read, lender, local) = lent_with_a_local_loan();
    let lender = lender.reclaim_wait().expect_err("would never end");
    drop(local);
    let fd = lender.reclaim_wait().expect("no local loan now");
    drop(fd);
    assert_eq!(write_end(&read), WriteEnd::Closed);
}

#[test]
fn a_wait_on_another_thread_ends_when_the_owners_local_loans_go() {
    let (read, lender, local) = lent_with_a_local_loan();
    let closing = lender.close();
    let waiter = std::thread::spawn(move || closing.wait());
    std::thread::sleep(Duration::from_millis(20));
    assert!(!waiter.is_finished(), "waits while the local loan lives");
    drop(local);
    waiter.join().unwrap().expect("close(2)");
    assert_eq!(write_end(&read), WriteEnd::Closed);
}
