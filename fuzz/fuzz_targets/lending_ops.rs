//! Drives fdlend with an arbitrary sequence of operations on real fds, comparing
//! with a reference model after every step (see `fdlend_fuzz`); at the end the
//! process must hold no more fds than at the start.

#![no_main]

use fdlend_fuzz::{open_fds, Op, World, MAX_OPS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|ops: Vec<Op>| {
    let before = open_fds();
    let mut world = World::default();
    for op in ops.into_iter().take(MAX_OPS) {
        world.step(op);
        world.check();
    }
    world.teardown();
    let after = open_fds();
    assert!(
        after <= before,
        "fds leaked: {before} open before the input, {after} after"
    );
});
