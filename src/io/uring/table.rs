//! The op table of one ring: a slab of in-flight ops keyed by the `user_data` of
//! their SQEs. Only [`Ring`](super::Ring) makes one, and a ring owns exactly one, so
//! a CQE can only ever be recorded by the table whose ops produced it.

use super::ids::{is_tagged, IdKey};
use crate::{Epoch, Loan};
use io_uring::squeue;
use std::any::Any;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

const GEN_SHIFT: u32 = 24;
const STAGE_SHIFT: u32 = 23;
const GEN_MASK: u64 = 0xff_ffff;
const INDEX_MASK: u64 = (1 << STAGE_SHIFT) - 1;

/// One lent file, by identity: its number and the incarnation that number had,
/// which no later file on the number shares (epochs never come back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    pub(crate) fd: RawFd,
    pub(crate) epoch: Epoch,
}

impl FileId {
    pub(crate) fn of(loan: &Loan) -> FileId {
        FileId {
            fd: loan.as_raw_fd(),
            epoch: loan.epoch(),
        }
    }
}

/// What an op left in the table: the resources the kernel may touch, and the
/// results of its SQEs as their CQEs arrive.
enum State {
    Vacant,
    InFlight {
        resources: Box<dyn Any>,
        /// One bit per stage whose CQE has not been recorded yet.
        pending: u8,
        results: [i32; 2],
        abandoned: bool,
        fixed: Option<u32>,
        /// Runs at the op's last CQE, handled or abandoned (see [`OnDone`]).
        on_done: Option<OnDone>,
        /// Builds stage 1 from stage 0's result (see [`Then`]).
        then: Option<Then>,
        /// The lent file the op works on, by identity (a cancel must never reach
        /// the next file on the same number), and whether it is a send (whose
        /// splices name their pipe, so no cancel by fd matches it: it is cancelled
        /// by id).
        file: Option<(FileId, bool)>,
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

/// Where one op lives: its slot and the slot's generation when it was pushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Key {
    index: usize,
    generation: u64,
}

/// What an op must do the moment its last CQE is recorded, whether or not its
/// handle is still there to look (a failed hand-off gives back its loan): it gets
/// the parked resources and results and returns what to drop once the table is no
/// longer borrowed. Only fdlend's own code: it runs under the table's borrow.
pub(crate) type OnDone = fn(&mut dyn Any, &[i32; 2]) -> Option<Box<dyn Any>>;

/// How a two-stage op whose second SQE depends on its first one's result (an
/// O_DIRECT send writes what its read got) makes stage 1 when stage 0's CQE is
/// recorded: the entry to push (pointing into the parked resources), or the result
/// to record for stage 1 without pushing anything. Only fdlend's own code: it runs
/// under the table's borrow.
pub(crate) type Then = fn(&mut dyn Any, i32) -> Result<squeue::Entry, i32>;

/// What recording one CQE did.
pub(crate) struct Recorded {
    /// Resources of an abandoned op whose last CQE this was: drop them outside
    /// the table's borrow.
    pub(crate) freed: Option<Box<dyn Any>>,
    /// What the op's [`OnDone`] gave back, to drop outside the borrow too.
    pub(crate) released: Option<Box<dyn Any>>,
    /// The fixed-file slot the op used, once its last CQE is in.
    pub(crate) fixed_done: Option<u32>,
    /// Stage 1 of an op with a [`Then`], its `user_data` set: push it.
    pub(crate) next: Option<squeue::Entry>,
}

pub(crate) struct OpTable {
    slots: Vec<Slot>,
    free: Vec<usize>,
    in_flight: usize,
    /// Seals every id this table hands out (see ids.rs).
    key: IdKey,
}

impl OpTable {
    /// An empty table with a fresh random key; fails only if getrandom(2) does.
    pub(crate) fn new() -> io::Result<OpTable> {
        Ok(OpTable {
            slots: Vec::new(),
            free: Vec::new(),
            in_flight: 0,
            key: IdKey::random()?,
        })
    }

    /// Ops whose last CQE has not been recorded yet.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Parks `resources` for an op of `sqes` SQEs (using fixed-file slot `fixed`, if
    /// any) and returns its key. The slot is one no in-flight op holds: a slot is
    /// only freed after its op's last CQE, so no CQE can reach a later op.
    pub(crate) fn insert(&mut self, resources: Box<dyn Any>, sqes: u8, fixed: Option<u32>) -> Key {
        assert!(sqes == 1 || sqes == 2, "fdlend: an op has one or two SQEs");
        let state = State::InFlight {
            resources,
            pending: (1 << sqes) - 1,
            results: [0; 2],
            abandoned: false,
            fixed,
            on_done: None,
            then: None,
            file: None,
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
            "fdlend: more than 2^23 io_uring ops in flight on one ring"
        );
        let slot = &mut self.slots[index];
        debug_assert!(matches!(slot.state, State::Vacant));
        slot.state = state;
        self.in_flight += 1;
        Key {
            index,
            generation: slot.generation,
        }
    }

    /// Sets what the op at `key` does at its last CQE.
    pub(crate) fn on_done(&mut self, key: Key, hook: OnDone) {
        if let Some(State::InFlight { on_done, .. }) = self.slot(key).map(|slot| &mut slot.state) {
            *on_done = Some(hook);
        }
    }

    /// Makes the op at `key` build its stage 1 from stage 0's result. Its stage 1
    /// is not pushed by `push`: the ring pushes what `hook` builds.
    pub(crate) fn then(&mut self, key: Key, hook: Then) {
        if let Some(State::InFlight { then, .. }) = self.slot(key).map(|slot| &mut slot.state) {
            *then = Some(hook);
        }
    }

    /// Marks the op at `key` as one on `file` (a send of it if `send`).
    pub(crate) fn mark_file(&mut self, key: Key, file: FileId, send: bool) {
        if let Some(State::InFlight { file: of, .. }) = self.slot(key).map(|slot| &mut slot.state) {
            *of = Some((file, send));
        }
    }

    /// The `user_data` of every stage still waiting for its CQE of every in-flight
    /// op on `file` (`sends`: `Some(true)` its sends only, `Some(false)` all but
    /// its sends, `None` all).
    pub(crate) fn ops_of(&self, file: FileId, sends: Option<bool>) -> Vec<u64> {
        let mut data = Vec::new();
        for (index, slot) in self.slots.iter().enumerate() {
            let State::InFlight {
                file: Some((of, send)),
                pending,
                ..
            } = slot.state
            else {
                continue;
            };
            if of != file || sends.is_some_and(|sends| sends != send) {
                continue;
            }
            let key = Key {
                index,
                generation: slot.generation,
            };
            for stage in 0..2 {
                if pending & (1 << stage) != 0 {
                    data.push(self.user_data(key, stage));
                }
            }
        }
        data
    }

    /// The `user_data` for stage `stage` (0 or 1) of the op at `key`.
    pub(crate) fn user_data(&self, key: Key, stage: u64) -> u64 {
        self.key.seal(
            (key.generation & GEN_MASK) << GEN_SHIFT | stage << STAGE_SHIFT | key.index as u64,
        )
    }

    fn slot(&mut self, key: Key) -> Option<&mut Slot> {
        self.slots
            .get_mut(key.index)
            .filter(|slot| slot.generation == key.generation)
    }

    /// Frees the slot (the generation moves on, so stale keys miss it).
    fn vacate(&mut self, key: Key) -> Option<State> {
        let slot = self.slot(key)?;
        let state = std::mem::replace(&mut slot.state, State::Vacant);
        slot.generation = (slot.generation + 1) & GEN_MASK;
        self.free.push(key.index);
        Some(state)
    }

    /// Records one tagged CQE of this table's ring, or returns `None`, recording
    /// nothing, if its id opens to no stage of an in-flight op still waiting for
    /// its CQE: a forged or foreign tag (an SQE pushed before the ring was taken,
    /// a `MSG_RING` data message), which must never finish an op whose buffer the
    /// kernel may still write. fdlend's own CQEs always name a pending stage: each
    /// is recorded once, and a slot is freed only after its last one.
    pub(crate) fn record(&mut self, user_data: u64, result: i32) -> Option<Recorded> {
        debug_assert!(is_tagged(user_data));
        let id = self.key.open(user_data);
        let key = Key {
            index: (id & INDEX_MASK) as usize,
            generation: (id >> GEN_SHIFT) & GEN_MASK,
        };
        let stage = ((id >> STAGE_SHIFT) & 1) as usize;
        let Some(State::InFlight {
            pending,
            results,
            abandoned,
            then,
            resources,
            ..
        }) = self.slot(key).map(|slot| &mut slot.state)
        else {
            return None;
        };
        if *pending & (1 << stage) == 0 {
            return None;
        }
        *pending &= !(1 << stage);
        results[stage] = result;
        let mut next = None;
        if let (Some(hook), 0, true) = (*then, stage, *pending != 0) {
            match hook(&mut **resources, result) {
                Ok(entry) => next = Some(entry),
                Err(skipped) => {
                    *pending = 0;
                    results[1] = skipped;
                }
            }
        }
        if *pending != 0 {
            let next = next.map(|entry| entry.user_data(self.user_data(key, 1)));
            return Some(Recorded {
                freed: None,
                released: None,
                fixed_done: None,
                next,
            });
        }
        let abandoned = *abandoned;
        self.in_flight -= 1;
        let slot = self.slot(key).expect("found above");
        let State::InFlight {
            mut resources,
            results,
            fixed,
            on_done,
            ..
        } = std::mem::replace(&mut slot.state, State::Vacant)
        else {
            unreachable!("matched InFlight above")
        };
        let released = on_done.and_then(|hook| hook(&mut *resources, &results));
        if abandoned {
            self.vacate(key);
            return Some(Recorded {
                freed: Some(resources),
                released,
                fixed_done: fixed,
                next: None,
            });
        }
        slot.state = State::Done { resources, results };
        Some(Recorded {
            freed: None,
            released,
            fixed_done: fixed,
            next: None,
        })
    }

    /// The finished op's resources and results, or `None` while it is in flight.
    pub(crate) fn take_done(&mut self, key: Key) -> Option<(Box<dyn Any>, [i32; 2])> {
        if !self.is_done(key) {
            return None;
        }
        match self.vacate(key) {
            Some(State::Done { resources, results }) => Some((resources, results)),
            _ => unreachable!("checked Done above"),
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
                _ => unreachable!("matched Done above"),
            },
            State::Vacant => None,
        }
    }
}

/// Addresses of resources leaked on purpose, kept reachable so leak checkers
/// (LeakSanitizer, valgrind) see them as retained, not lost.
static RETAINED: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

/// Leaks `resources` for good: the kernel may still use them.
fn retain_forever(resources: Box<dyn Any>) {
    let address = Box::into_raw(resources) as *mut u8 as usize;
    RETAINED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(address);
}

impl Drop for OpTable {
    fn drop(&mut self) {
        for slot in &mut self.slots {
            if let State::InFlight { resources, .. } =
                std::mem::replace(&mut slot.state, State::Vacant)
            {
                // The kernel may still use these: leaking is the only safe end.
                retain_forever(resources);
            }
        }
    }
}
