//! Drives an io_uring `Ring` with arbitrary op sequences on real files and pipes,
//! against a model (see `fdlend_fuzz::uring_ops`): every CQE accounted for, every
//! result checked, every lent file closed at the end (but those a deliberately
//! dropped ring leaked).

#![no_main]

use fdlend_fuzz::uring_ops::{open_fds, Op, World, MAX_OPS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<Op>| {
    let before = open_fds();
    let mut world = World::default();
    let mut leaky = false;
    for op in ops.into_iter().take(MAX_OPS) {
        leaky |= matches!(op, Op::DropRing { leak: true });
        world.step(op);
    }
    world.teardown();
    let after = open_fds();
    assert!(
        leaky || after <= before,
        "fds leaked: {before} open before the input, {after} after"
    );
});
