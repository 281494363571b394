//! Region I/O with arbitrary offsets, lengths, cut points and buffer addresses, on a
//! buffered and an O_DIRECT fd of one file, every outcome predicted exactly (see
//! `fdlend_fuzz::regions`); no loan may outlive the input's regions.

#![no_main]

use fdlend_fuzz::regions::{run, Op};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<Op>| run(&ops));
