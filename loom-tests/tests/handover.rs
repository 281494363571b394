//! Local loans (the owner thread's, uncounted) handed over as counted loans to other
//! threads while the owner closes: the local loans keep the closing file open, the
//! handed-over loans keep it open further, and the last of all of them closes it.
#![cfg(loom)]

use fdlend::{LendError, Lender, LocalLoan};
use fdlend_loom_tests::{model, pipe};
use loom::thread::{self, JoinHandle};

fn hand_over(local: &LocalLoan, byte: &'static [u8; 1]) -> JoinHandle<()> {
    let loan = local
        .to_send()
        .expect("a local loan can always be handed over");
    thread::spawn(move || {
        nix::unistd::write(&loan, byte).expect("a handed-over loan's fd is open");
    })
}

#[test]
fn local_loan_handover_survives_close() {
    model(|| {
        let (witness, write) = pipe();
        let lender = Lender::new(write).unwrap();
        let ticket = lender.ticket();
        let local = lender.local_loan();
        let first = hand_over(&local, b"a");
        let closing = lender.close();
        assert_eq!(
            ticket.pin().unwrap_err(),
            LendError::Closing { fd: ticket.fd() }
        );
        // Closing refuses new loans, not handovers: the local loan holds the file.
        let second = hand_over(&local, b"b");
        nix::unistd::write(&local, b"c").expect("the local loan's fd is open");
        drop(local);
        closing.wait().expect("close(2) of the lent fd");
        assert_eq!(
            witness.drain_sorted(),
            (b"abc".to_vec(), true),
            "closed after all three"
        );
        witness.assert_released();
        first.join().unwrap();
        second.join().unwrap();
    });
}

#[test]
fn close_wait_with_local_loans_defers_to_the_last() {
    model(|| {
        let (witness, write) = pipe();
        let lender = Lender::new(write).unwrap();
        let local = lender.local_loan();
        let sent = hand_over(&local, b"a");
        let error = lender
            .close_wait()
            .expect_err("a live local loan would block close_wait forever");
        let inner = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<LendError>())
            .copied();
        assert_eq!(
            inner,
            Some(LendError::LocalLoansOutstanding {
                fd: witness.number,
                count: 1
            })
        );
        let (mut written, eof) = witness.drain();
        assert!(!eof, "the local loan still holds the file");
        nix::unistd::write(&local, b"l").expect("the local loan's fd is open");
        drop(local);
        sent.join().unwrap();
        let (rest, eof) = witness.drain();
        assert!(eof, "closed by the last of the local and the sent loan");
        written.extend(rest);
        written.sort_unstable();
        assert_eq!(written, b"al");
        witness.assert_released();
    });
}
