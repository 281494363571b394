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
    assert_eq!(
        ticket.pin().unwrap_err(),
        RegionError::Lend(LendError::Closed { fd })
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
        assert_eq!(error, RegionError::Lend(LendError::Stale { fd }));
    } else {
        assert_eq!(error, RegionError::Lend(LendError::Closed { fd }));
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
