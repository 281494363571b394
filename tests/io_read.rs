//! Positional reads of regions, on regular and O_DIRECT files, compared byte for
//! byte with what was written.

mod io_common;

use fdlend::io::{
    is_direct, AlignedBuf, AlignmentSource, DirectAlignment, LentRegion, Misaligned, RegionError,
};
use fdlend::Lender;
use io_common::{pattern, TempFile};
use std::os::fd::AsFd;

const SIZE: usize = 3 * 4096 + 100;

#[test]
fn reads_match_the_file_byte_for_byte() {
    let bytes = pattern(SIZE);
    let file = TempFile::with(&bytes);
    let lender = Lender::try_from(file.open()).unwrap();
    let region = LentRegion::new(lender.loan().unwrap(), 10, 5000).unwrap();
    let mut buf = vec![0; 100];
    assert_eq!(region.read_at(0, &mut buf).unwrap(), 100);
    assert_eq!(buf, &bytes[10..110]);
    assert_eq!(
        region.read_at(4950, &mut buf).unwrap(),
        50,
        "clipped to the region"
    );
    assert_eq!(&buf[..50], &bytes[4960..5010]);
    assert_eq!(
        region.read_at(5000, &mut buf).unwrap(),
        0,
        "at the end: nothing"
    );
    assert_eq!(
        region.read_at(5001, &mut buf).unwrap_err(),
        RegionError::OutOfRegion {
            at: 5001,
            len: 5000
        }
    );
    region.read_exact_at(123, &mut buf).unwrap();
    assert_eq!(buf, &bytes[133..233]);
    assert_eq!(
        region.read_exact_at(4901, &mut buf).unwrap_err(),
        RegionError::OutOfRegion {
            at: 5001,
            len: 5000
        }
    );
    assert_eq!(region.read_to_vec().unwrap(), &bytes[10..5010]);
    drop(region);
    assert!(lender.try_close().is_ok());
}

#[test]
fn a_region_past_end_of_file_returns_what_exists_and_says_so() {
    let bytes = pattern(1000);
    let file = TempFile::with(&bytes);
    let lender = Lender::try_from(file.open()).unwrap();
    let region = LentRegion::new(lender.loan().unwrap(), 900, 500).unwrap();
    let mut buf = vec![0; 500];
    assert_eq!(region.read_at(0, &mut buf).unwrap(), 100);
    assert_eq!(&buf[..100], &bytes[900..]);
    assert_eq!(
        region.read_exact_at(0, &mut buf).unwrap_err(),
        RegionError::ShortRead {
            read: 100,
            wanted: 500
        }
    );
    assert_eq!(
        &buf[..100],
        &bytes[900..],
        "the bytes that exist are in the buffer"
    );
    assert_eq!(
        region.read_to_vec().unwrap_err(),
        RegionError::ShortRead {
            read: 100,
            wanted: 500
        }
    );
    let mut out = b"prefix".to_vec();
    assert_eq!(region.read_to_end(&mut out).unwrap(), 100);
    assert_eq!(&out[6..], &bytes[900..]);

    let beyond = LentRegion::new(lender.loan().unwrap(), 5000, 10).unwrap();
    assert_eq!(beyond.read_at(0, &mut buf).unwrap(), 0);
    assert_eq!(
        beyond.read_to_vec().unwrap_err(),
        RegionError::ShortRead {
            read: 0,
            wanted: 10
        }
    );
    let message = RegionError::ShortRead {
        read: 0,
        wanted: 10,
    }
    .to_string();
    assert!(
        message.contains("0 of 10") && message.contains("shrink"),
        "{message}"
    );
    drop((region, beyond));
    assert!(lender.try_close().is_ok());
}

#[test]
fn reads_fail_with_a_typed_error_on_an_unreadable_fd() {
    let (read, _write) = nix::unistd::pipe().unwrap();
    let lender = Lender::new(read).unwrap();
    let region = LentRegion::new(lender.loan().unwrap(), 0, 10).unwrap();
    let error = region.read_to_vec().unwrap_err();
    assert_eq!(
        error,
        RegionError::Io {
            call: "pread",
            errno: nix::errno::Errno::ESPIPE
        }
    );
    drop(region);
    assert!(lender.try_close().is_ok());
}

fn direct_lender(file: &TempFile) -> Option<Lender> {
    let opened = file.open_direct()?;
    assert!(is_direct(&opened).unwrap());
    assert!(!is_direct(file.open()).unwrap());
    Some(Lender::try_from(opened).unwrap())
}

#[test]
fn statx_reports_the_direct_io_alignment() {
    let file = TempFile::with(&pattern(SIZE));
    let Some(lender) = direct_lender(&file) else {
        return;
    };
    let align = DirectAlignment::of(lender.as_fd()).unwrap();
    println!("DirectAlignment on {}: {align:?}", file.path.display());
    assert!(align.memory.is_power_of_two() && align.offset.is_power_of_two());
    assert!(align.offset <= 4096, "{align:?}");
    if align.source != AlignmentSource::Statx {
        println!(
            "note: statx did not report STATX_DIOALIGN here; fell back to {:?}",
            align.source
        );
    }
    assert!(lender.try_close().is_ok());
}

#[test]
fn unaligned_regions_on_o_direct_read_exactly_the_asked_bytes() {
    let bytes = pattern(SIZE);
    let file = TempFile::with(&bytes);
    let Some(lender) = direct_lender(&file) else {
        return;
    };
    let cases = [
        (0, 4096),
        (1, 10),
        (4095, 2),
        (100, 8000),
        (4096, 4096),
        (12_000, 388),
        (12_000, 1000),
        (7, SIZE as u64 - 7),
    ];
    for (offset, len) in cases {
        let region = LentRegion::new(lender.loan().unwrap(), offset, len).unwrap();
        let end = ((offset + len) as usize).min(SIZE);
        let mut out = Vec::new();
        region.read_to_end(&mut out).unwrap();
        assert_eq!(out, &bytes[offset as usize..end], "region {offset}+{len}");
        // An unaligned buffer on the copying read: the bounce buffer absorbs it.
        let mut odd = [0; 3 + 50];
        let n = region.read_at(0, &mut odd[3..]).unwrap();
        assert_eq!(&odd[3..3 + n], &bytes[offset as usize..offset as usize + n]);
    }
    let past = LentRegion::new(lender.loan().unwrap(), 12_200, 1000).unwrap();
    assert_eq!(
        past.read_to_vec().unwrap_err(),
        RegionError::ShortRead {
            read: SIZE as u64 - 12_200,
            wanted: 1000
        }
    );
    drop(past);
    assert_eq!(lender.outstanding(), 0);
    assert!(lender.try_close().is_ok());
}

#[test]
fn no_copy_reads_take_aligned_requests_and_name_the_rule_otherwise() {
    let bytes = pattern(SIZE);
    let file = TempFile::with(&bytes);
    let Some(lender) = direct_lender(&file) else {
        return;
    };
    let align = DirectAlignment::of(lender.as_fd()).unwrap();
    let unit = u64::from(align.offset);
    let mut buf = AlignedBuf::new(2 * 4096, 4096).unwrap();

    let region = LentRegion::new(lender.loan().unwrap(), 4096, 2 * 4096).unwrap();
    region.read_exact_direct_at(0, &mut buf).unwrap();
    assert_eq!(&buf[..], &bytes[4096..3 * 4096]);

    // The last block is partial: an aligned request returns what exists.
    let tail = LentRegion::new(lender.loan().unwrap(), 3 * 4096, 4096).unwrap();
    assert_eq!(tail.read_direct_at(0, &mut buf[..4096]).unwrap(), 100);
    assert_eq!(&buf[..100], &bytes[3 * 4096..]);
    assert_eq!(
        tail.read_exact_direct_at(0, &mut buf[..4096]).unwrap_err(),
        RegionError::ShortRead {
            read: 100,
            wanted: 4096
        }
    );

    if unit > 1 {
        let odd = LentRegion::new(lender.loan().unwrap(), 1, 4096).unwrap();
        assert_eq!(
            odd.read_direct_at(0, &mut buf[..4096]).unwrap_err(),
            RegionError::Misaligned {
                what: Misaligned::Offset,
                value: 1,
                align: align.offset
            }
        );
        assert_eq!(
            region
                .read_direct_at(0, &mut buf[..unit as usize + 1])
                .unwrap_err(),
            RegionError::Misaligned {
                what: Misaligned::Length,
                value: unit + 1,
                align: align.offset
            }
        );
    }
    if align.memory > 1 {
        let address = buf[1..].as_ptr() as u64;
        assert_eq!(
            region.read_direct_at(0, &mut buf[1..=4096]).unwrap_err(),
            RegionError::Misaligned {
                what: Misaligned::Buffer,
                value: address,
                align: align.memory
            }
        );
        let mut plain = vec![0u8; 4096 + 1];
        let start = plain.as_ptr() as usize % align.memory as usize;
        let skew = if start == 0 { 1 } else { 0 };
        let error = region
            .read_direct_at(0, &mut plain[skew..skew + 4096])
            .unwrap_err();
        assert!(
            matches!(
                error,
                RegionError::Misaligned {
                    what: Misaligned::Buffer,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("AlignedBuf"), "{error}");
    }
    drop((region, tail));
    assert!(lender.try_close().is_ok());
}
