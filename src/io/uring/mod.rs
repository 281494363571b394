//! io_uring ops for regions, on a ring the caller owns and drives.
//!
//! fdlend runs no event loop. The caller pushes ops through a [`Completions`] table
//! (one per ring, on the ring's thread), submits and reaps as it likes, and feeds
//! every reaped completion to [`Completions::complete`]. Each op owns its region
//! (so its loan) and its buffer or destination in the table, not in the op handle:
//! dropping the handle before the completion arrives leaves them parked there until
//! it does, so the kernel never writes to freed memory or into an fd number that was
//! closed and reused. The contract is spelled out in SAFETY.md ("Region I/O and
//! io_uring").
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use fdlend::io::uring::Completions;
//! use fdlend::io::LentRegion;
//! use std::io::Write;
//!
//! let fd = nix::sys::memfd::memfd_create("doc", nix::sys::memfd::MFdFlags::empty())?;
//! let mut file = std::fs::File::from(fd);
//! file.write_all(b"hello, ring")?;
//! let lender = fdlend::Lender::try_from(file)?;
//!
//! let mut ring = io_uring::IoUring::new(8)?;
//! let ops = Completions::new();
//! let region = LentRegion::new(lender.loan()?, 7, 4)?;
//! let read = ops.read(&mut ring.submission(), region, vec![0; 4]).map_err(|full| full.to_string())?;
//! ring.submit_and_wait(1)?;
//! for cqe in ring.completion() {
//!     // SAFETY: reaped from the ring the op was pushed to, fed once.
//!     unsafe { ops.complete(&cqe) };
//! }
//! let done = read.finish().ok().expect("its completion was fed");
//! assert_eq!(&done.buf[..done.result?], b"ring");
//! # Ok(())
//! # }
//! ```

mod ops;

pub use ops::{OwnedBuf, QueueFull, ReadDone, ReadOp, SendDone, SendOp, SendRefused};

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};

/// The top 16 bits of every `user_data` fdlend puts on an SQE.
pub const USER_DATA_TAG: u64 = 0xfd1e;

const TAG_SHIFT: u32 = 48;
const TABLE_SHIFT: u32 = 36;
const GEN_SHIFT: u32 = 24;
const STAGE_SHIFT: u32 = 23;
const TABLE_MASK: u64 = 0xfff;
const GEN_MASK: u64 = 0xfff;
const INDEX_MASK: u64 = (1 << STAGE_SHIFT) - 1;

/// What an op left in the table: the resources the kernel may touch, and the
/// results of its SQEs as their CQEs arrive.
enum State {
    Vacant,
    InFlight {
        resources: Box<dyn Any>,
        left: u8,
        results: [i32; 2],
        abandoned: bool,
    },
    Done {
        resources: Box<dyn Any>,
        results: [i32; 2],
    },
}

struct Slot {
    generation: u64,
    state: State,
}

pub(crate) struct Table {
    id: u64,
    slots: Vec<Slot>,
    free: Vec<usize>,
}

/// The per-ring table of fdlend's io_uring ops. `!Send`: keep it with its ring.
///
/// Ops' resources live here until their last CQE is fed to
/// [`complete`](Completions::complete). If the table is dropped while ops are in
/// flight, their resources are leaked on purpose (their loans never return, so their
/// files never close) rather than freed under the kernel.
#[derive(Clone)]
pub struct Completions {
    table: Rc<RefCell<Table>>,
}

impl Default for Completions {
    fn default() -> Self {
        Completions::new()
    }
}

impl Completions {
    /// An empty table, with its own id in the `user_data` it hands out.
    pub fn new() -> Completions {
        static NEXT_ID: AtomicU16 = AtomicU16::new(0);
        // Relaxed: the id only has to differ from other tables', no memory is published.
        let id = u64::from(NEXT_ID.fetch_add(1, Ordering::Relaxed)) & TABLE_MASK;
        Completions {
            table: Rc::new(RefCell::new(Table {
                id,
                slots: Vec::new(),
                free: Vec::new(),
            })),
        }
    }

    /// True when `user_data` carries fdlend's tag (some table's op): feed those CQEs
    /// to their table, handle the rest yourself.
    pub fn is_ours(user_data: u64) -> bool {
        user_data >> TAG_SHIFT == USER_DATA_TAG
    }

    /// Ops whose completions have not all been fed yet, including dropped ones.
    pub fn in_flight(&self) -> usize {
        let table = self.table.borrow();
        table
            .slots
            .iter()
            .filter(|slot| matches!(slot.state, State::InFlight { .. }))
            .count()
    }

    /// Takes one reaped CQE: returns `true` if it belonged to this table (and is
    /// consumed), `false` if it is someone else's. The last CQE of a dropped op
    /// releases its resources (its loan returns here, possibly closing the file).
    ///
    /// # Safety
    /// - `cqe` was reaped from the completion queue of the ring this table's ops were
    ///   pushed to (a CQE of another ring may carry a live op's `user_data` and would
    ///   free its buffer while the kernel still writes to it).
    /// - Each CQE is fed at most once (a copy fed again after its slot was reused is
    ///   caught by a generation count only until that count wraps).
    pub unsafe fn complete(&self, cqe: &io_uring::cqueue::Entry) -> bool {
        let freed = {
            let mut table = self.table.borrow_mut();
            match table.record(cqe.user_data(), cqe.result()) {
                None => return false,
                Some(freed) => freed,
            }
        };
        // Outside the borrow: dropping a loan may close the file, which must not
        // re-enter the table.
        drop(freed);
        true
    }

    pub(crate) fn table(&self) -> &Rc<RefCell<Table>> {
        &self.table
    }
}

impl fmt::Debug for Completions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completions")
            .field("id", &self.table.borrow().id)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// Where one op lives: its slot and the slot's generation when it was pushed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Key {
    index: usize,
    generation: u64,
}

impl Table {
    /// Parks `resources` for an op of `sqes` SQEs and returns its key.
    pub(crate) fn insert(&mut self, resources: Box<dyn Any>, sqes: u8) -> Key {
        let state = State::InFlight {
            resources,
            left: sqes,
            results: [0; 2],
            abandoned: false,
        };
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    state: State::Vacant,
                });
                self.slots.len() - 1
            }
        };
        assert!(
            index as u64 <= INDEX_MASK,
            "fdlend: more than 2^23 io_uring ops in flight on one table"
        );
        let slot = &mut self.slots[index];
        slot.state = state;
        Key {
            index,
            generation: slot.generation,
        }
    }

    /// Undoes an `insert` whose SQEs never reached the queue.
    pub(crate) fn cancel_unsubmitted(&mut self, key: Key) -> Box<dyn Any> {
        match self.vacate(key) {
            Some(State::InFlight { resources, .. }) => resources,
            _ => unreachable!("fdlend: an op that was never submitted is in flight"),
        }
    }

    /// The `user_data` for stage `stage` (0 or 1) of the op at `key`.
    pub(crate) fn user_data(&self, key: Key, stage: u64) -> u64 {
        USER_DATA_TAG << TAG_SHIFT
            | self.id << TABLE_SHIFT
            | (key.generation & GEN_MASK) << GEN_SHIFT
            | stage << STAGE_SHIFT
            | key.index as u64
    }

    fn slot(&mut self, key: Key) -> Option<&mut Slot> {
        self.slots
            .get_mut(key.index)
            .filter(|slot| slot.generation == key.generation)
    }

    /// Frees the slot (the generation moves on, so stale keys and CQEs miss it).
    fn vacate(&mut self, key: Key) -> Option<State> {
        let slot = self.slot(key)?;
        let state = std::mem::replace(&mut slot.state, State::Vacant);
        slot.generation = (slot.generation + 1) & GEN_MASK;
        self.free.push(key.index);
        Some(state)
    }

    /// Records one CQE; `None` if it is not this table's, else the resources it
    /// freed (an abandoned op's, on its last CQE).
    fn record(&mut self, user_data: u64, result: i32) -> Option<Option<Box<dyn Any>>> {
        if user_data >> TAG_SHIFT != USER_DATA_TAG
            || (user_data >> TABLE_SHIFT) & TABLE_MASK != self.id
        {
            return None;
        }
        let key = Key {
            index: (user_data & INDEX_MASK) as usize,
            generation: (user_data >> GEN_SHIFT) & GEN_MASK,
        };
        let stage = ((user_data >> STAGE_SHIFT) & 1) as usize;
        let slot = self.slot(key)?;
        let State::InFlight {
            left,
            results,
            abandoned,
            ..
        } = &mut slot.state
        else {
            return None;
        };
        results[stage] = result;
        *left -= 1;
        if *left > 0 {
            return Some(None);
        }
        let abandoned = *abandoned;
        let State::InFlight {
            resources, results, ..
        } = std::mem::replace(&mut slot.state, State::Vacant)
        else {
            unreachable!()
        };
        if abandoned {
            self.vacate(key);
            return Some(Some(resources));
        }
        slot.state = State::Done { resources, results };
        Some(None)
    }

    /// The finished op's resources and results, or `None` while it is in flight.
    pub(crate) fn take_done(&mut self, key: Key) -> Option<(Box<dyn Any>, [i32; 2])> {
        if !matches!(self.slot(key)?.state, State::Done { .. }) {
            return None;
        }
        match self.vacate(key) {
            Some(State::Done { resources, results }) => Some((resources, results)),
            _ => unreachable!(),
        }
    }

    pub(crate) fn is_done(&mut self, key: Key) -> bool {
        self.slot(key)
            .is_some_and(|slot| matches!(slot.state, State::Done { .. }))
    }

    /// An op handle is gone: free a finished op now (returning its resources to drop
    /// outside the borrow), park an unfinished one until its last CQE.
    pub(crate) fn abandon(&mut self, key: Key) -> Option<Box<dyn Any>> {
        let slot = self.slot(key)?;
        match &mut slot.state {
            State::InFlight { abandoned, .. } => {
                *abandoned = true;
                None
            }
            State::Done { .. } => match self.vacate(key) {
                Some(State::Done { resources, .. }) => Some(resources),
                _ => unreachable!(),
            },
            State::Vacant => None,
        }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        for slot in &mut self.slots {
            if let State::InFlight { resources, .. } =
                std::mem::replace(&mut slot.state, State::Vacant)
            {
                // The kernel may still use these: leaking is the only safe end.
                std::mem::forget(resources);
            }
        }
    }
}
