//! LentRegion and RegionTicket: construction, splitting, chunks, tickets, and the
//! loans they count, on real files.

mod io_common;

use fdlend::io::{LentRegion, RegionError, RegionTicket};
use fdlend::{LendError, Lender};
use io_common::{identity, open_count, pattern, TempFile};

#[test]
fn bad_ranges_are_typed_errors_and_count_nothing() {
    let file = TempFile::with(&pattern(100));
    let lender = Lender::try_from(file.open()).unwrap();
    assert_eq!(
        LentRegion::new(lender.loan().unwrap(), 5, 0).unwrap_err(),
        RegionError::ZeroLength
    );
    assert_eq!(
        LentRegion::new(lender.loan().unwrap(), u64::MAX - 1, 10).unwrap_err(),
        RegionError::Overflow {
            offset: u64::MAX - 1,
            len: 10
        }
    );
    assert_eq!(
        LentRegion::new(lender.loan().unwrap(), i64::MAX as u64, 1).unwrap_err(),
        RegionError::Overflow {
            offset: i64::MAX as u64,
            len: 1
        },
        "past off_t is an overflow too"
    );
    assert_eq!(
        RegionTicket::new(lender.ticket(), 1, 0).unwrap_err(),
        RegionError::ZeroLength
    );
    assert!(RegionTicket::new(lender.ticket(), u64::MAX, 1).is_err());
    assert_eq!(
        lender.outstanding(),
        0,
        "the refused regions returned their loans"
    );
    let message = RegionError::Overflow { offset: 1, len: 2 }.to_string();
    assert!(
        message.contains("offset 1") && message.contains("check"),
        "{message}"
    );
    assert!(lender.try_close().is_ok());
}

#[test]
fn a_region_on_another_thread_reads_its_bytes_and_returns_its_loan() {
    let bytes = pattern(10_000);
    let file = TempFile::with(&bytes);
    let lender = Lender::try_from(file.open()).unwrap();
    let region = LentRegion::new(lender.loan().unwrap(), 1234, 4000).unwrap();
    assert_eq!(
        (region.offset(), region.len(), region.end()),
        (1234, 4000, 5234)
    );
    assert_eq!(lender.outstanding(), 1);
    let read = std::thread::spawn(move || region.read_to_vec())
        .join()
        .unwrap()
        .unwrap();
    assert_eq!(read, &bytes[1234..5234]);
    assert_eq!(lender.outstanding(), 0);
    assert!(lender.try_close().is_ok());
}

#[test]
fn splits_and_slices_cover_the_right_bytes_with_a_loan_each() {
    let bytes = pattern(4096);
    let file = TempFile::with(&bytes);
    let lender = Lender::try_from(file.open()).unwrap();
    let region = LentRegion::new(lender.loan().unwrap(), 100, 1000).unwrap();

    let slice = region.slice(10..20).unwrap();
    assert_eq!((slice.offset(), slice.len()), (110, 10));
    assert_eq!(slice.read_to_vec().unwrap(), &bytes[110..120]);
    assert_eq!(
        region.slice(990..=999).unwrap().read_to_vec().unwrap(),
        &bytes[1090..1100]
    );
    assert_eq!(region.slice(5..5).unwrap_err(), RegionError::ZeroLength);
    assert_eq!(
        region.slice(..1001).unwrap_err(),
        RegionError::OutOfRegion {
            at: 1001,
            len: 1000
        }
    );
    assert_eq!(lender.outstanding(), 2, "the region and `slice`");
    drop(slice);

    let (head, tail) = region.split_at(300).unwrap();
    assert_eq!(
        (head.offset(), head.len(), tail.offset(), tail.len()),
        (100, 300, 400, 700)
    );
    assert_eq!(head.read_to_vec().unwrap(), &bytes[100..400]);
    assert_eq!(tail.read_to_vec().unwrap(), &bytes[400..1100]);
    assert_eq!(lender.outstanding(), 2);
    assert_eq!(head.split_at(0).unwrap_err(), RegionError::ZeroLength);
    assert_eq!(lender.outstanding(), 1, "a refused split drops the region");
    assert_eq!(
        tail.split_at(700).unwrap_err(),
        RegionError::OutOfRegion { at: 700, len: 700 }
    );
    assert_eq!(lender.outstanding(), 0);
    assert!(lender.try_close().is_ok());
}

#[test]
fn chunks_tile_the_region_and_each_holds_the_file_open() {
    let bytes = pattern(10_000);
    let file = TempFile::with(&bytes);
    let opened = file.open();
    let id = identity(&opened);
    let lender = Lender::try_from(opened).unwrap();
    let region = LentRegion::new(lender.loan().unwrap(), 7, 9000).unwrap();
    assert_eq!(
        LentRegion::new(lender.loan().unwrap(), 0, 1)
            .unwrap()
            .chunks(0)
            .unwrap_err(),
        RegionError::ZeroLength
    );
    let chunks: Vec<LentRegion> = region.chunks(4096).unwrap().map(Result::unwrap).collect();
    assert_eq!(
        chunks.iter().map(LentRegion::len).collect::<Vec<_>>(),
        [4096, 4096, 808]
    );
    assert_eq!(lender.outstanding(), 3);
    let closing = lender.close();
    assert_eq!(open_count(id), 1, "chunks keep the file open after close()");
    let threads: Vec<_> = chunks
        .into_iter()
        .map(|chunk| std::thread::spawn(move || (chunk.offset(), chunk.read_to_vec().unwrap())))
        .collect();
    let mut joined: Vec<u8> = Vec::new();
    for thread in threads {
        let (offset, read) = thread.join().unwrap();
        assert_eq!(offset as usize, 7 + joined.len());
        joined.extend(read);
    }
    assert_eq!(joined, &bytes[7..9007]);
    assert!(closing.wait().is_ok());
    assert_eq!(open_count(id), 0, "the last chunk closed it");
}

#[test]
fn a_ticket_pins_a_region_only_while_the_file_is_open() {
    let bytes = pattern(2048);
    let file = TempFile::with(&bytes);
    let lender = Lender::try_from(file.open()).unwrap();
    let ticket = RegionTicket::new(lender.ticket(), 1000, 48).unwrap();
    let copy = ticket; // Copy: holds nothing
    assert_eq!(lender.outstanding(), 0);
    let region = std::thread::spawn(move || copy.pin().unwrap().read_to_vec().unwrap())
        .join()
        .unwrap();
    assert_eq!(region, &bytes[1000..1048]);
    assert_eq!(lender.outstanding(), 0);
    let fd = ticket.ticket().fd();
    lender.close_wait().unwrap();
    // Tests run in parallel: another test's lender may have taken the number since.
    let error = ticket.pin().unwrap_err();
    assert!(
        matches!(error, RegionError::Closed { fd: f } | RegionError::Stale { fd: f } if f == fd),
        "{error:?}"
    );
    let message = ticket.pin().unwrap_err().to_string();
    assert!(message.contains("re-open"), "{message}");
}

#[test]
fn a_ticket_gone_stale_before_the_read_refuses_to_pin() {
    let file = TempFile::with(&pattern(64));
    let other = TempFile::with(b"another file entirely");
    let lender = Lender::try_from(file.open()).unwrap();
    let ticket = RegionTicket::new(lender.ticket(), 0, 64).unwrap();
    let fd = ticket.ticket().fd();
    lender.close_wait().unwrap();
    // The number is reused by another file, lent by another lender.
    let reopened = other.open();
    let reused = std::os::fd::AsRawFd::as_raw_fd(&reopened) == fd;
    let second = Lender::try_from(reopened).unwrap();
    let error = ticket.pin().unwrap_err();
    if reused {
        assert_eq!(error, RegionError::Stale { fd });
    } else {
        assert_eq!(error, RegionError::Closed { fd });
    }
    assert_eq!(
        second.outstanding(),
        0,
        "the stale pin counted nothing on the new file"
    );
    second.close_wait().unwrap();
}

#[test]
fn regions_are_send_and_small() {
    fn is_send<T: Send>() {}
    is_send::<LentRegion>();
    is_send::<RegionTicket>();
    assert_eq!(std::mem::size_of::<LentRegion>(), 24);
}

#[test]
fn lender_and_ticket_make_regions_directly() {
    let bytes = pattern(4096);
    let file = TempFile::with(&bytes);
    let lender = Lender::try_from(file.open()).unwrap();
    assert!(matches!(lender.region(0, 0), Err(RegionError::ZeroLength)));
    assert_eq!(lender.outstanding(), 0, "a refused range counts no loan");
    let region = lender.region(100, 50).unwrap();
    assert_eq!(region.read_to_vec().unwrap(), bytes[100..150]);
    let ticket = lender.ticket().region(10, 5).unwrap();
    assert_eq!(ticket.pin().unwrap().read_to_vec().unwrap(), bytes[10..15]);
    drop(region);
    assert!(lender.try_close().is_ok());
}

#[test]
#[allow(clippy::reversed_empty_ranges)] // reversed on purpose
fn a_reversed_range_is_its_own_error_and_counts_nothing() {
    let file = TempFile::with(&pattern(100));
    let lender = Lender::try_from(file.open()).unwrap();
    let region = lender.region(0, 10).unwrap();
    assert_eq!(
        region.slice(7..3).unwrap_err(),
        RegionError::Reversed { start: 7, end: 3 }
    );
    assert_eq!(
        region.slice(7..=2).unwrap_err(),
        RegionError::Reversed { start: 7, end: 3 }
    );
    assert_eq!(region.slice(7..7).unwrap_err(), RegionError::ZeroLength);
    let message = region.slice(7..3).unwrap_err().to_string();
    assert!(
        message.contains("7..3") && message.contains("reversed"),
        "{message}"
    );
    assert_eq!(lender.outstanding(), 1, "only the region itself");
    drop(region);
    assert!(lender.try_close().is_ok());
}

/// What a user's `io::Result` code sees: `?` on a region error, no conversion.
fn read_pinned(ticket: RegionTicket) -> std::io::Result<Vec<u8>> {
    let region = ticket.pin()?;
    Ok(region.read_to_vec()?)
}

#[test]
fn lending_refusals_match_in_one_level_and_compose_with_io_results() {
    let bytes = pattern(64);
    let file = TempFile::with(&bytes);
    let lender = Lender::with_max_loans(file.open().into(), 1).unwrap();
    let ticket = RegionTicket::new(lender.ticket(), 8, 8).unwrap();
    let fd = ticket.ticket().fd();
    assert_eq!(read_pinned(ticket).unwrap(), &bytes[8..16]);

    let held = ticket.pin().unwrap();
    let saturated = ticket.pin().unwrap_err();
    assert_eq!(saturated, RegionError::Saturated { fd, limit: 1 });
    assert_eq!(
        saturated.lend_error(),
        Some(LendError::Saturated { fd, limit: 1 })
    );
    drop(held);

    lender.close_wait().unwrap();
    let error = ticket.pin().unwrap_err();
    // Tests run in parallel: another test's lender may have taken the number since.
    let lend = match error {
        RegionError::Closed { fd: closed } if closed == fd => LendError::Closed { fd },
        RegionError::Stale { fd: reused } if reused == fd => LendError::Stale { fd },
        other => panic!("a closed file's ticket pinned to {other:?}"),
    };
    assert_eq!(error.lend_error(), Some(lend));
    assert_eq!(RegionError::ZeroLength.lend_error(), None);

    let io_error = read_pinned(ticket).unwrap_err();
    assert_eq!(
        io_error.kind(),
        std::io::Error::from(lend).kind(),
        "the same kind as the bare LendError"
    );
    let inner = io_error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<RegionError>())
        .copied();
    assert_eq!(inner.and_then(|inner| inner.lend_error()), Some(lend));
    assert!(
        io_error.to_string().contains(&format!("fd {fd}")),
        "{io_error}"
    );
}
