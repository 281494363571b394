//! Op ids no one can guess. A CQE's `user_data` is all that ties it to an op, and
//! other writers can post CQEs on a ring (an SQE pushed before
//! [`Ring::with_ring`](super::Ring::with_ring) took the `IoUring`, an
//! `IORING_OP_MSG_RING` data message from another ring): if one of them carried a
//! live op's id, the op would finish while the kernel still writes its buffer. So
//! the 48 bits under fdlend's tag are the op's (slot, generation, stage) sealed with
//! a per-ring random key, and a CQE whose id opens to no pending stage is not ours.

use std::io;

/// The top 16 bits of every `user_data` fdlend puts on an op's SQE.
pub const USER_DATA_TAG: u64 = 0xfd1e;

/// The top 16 bits of the `user_data` of a hand-off's CQE on the target ring.
pub const HANDOFF_TAG: u64 = 0xfd1f;

const TAG_SHIFT: u32 = 48;
const HALF_BITS: u32 = 24;
const HALF_MASK: u32 = (1 << HALF_BITS) - 1;
const ID_MASK: u64 = (1 << TAG_SHIFT) - 1;

/// True when `user_data` carries fdlend's op tag.
pub(crate) fn is_tagged(user_data: u64) -> bool {
    user_data >> TAG_SHIFT == USER_DATA_TAG
}

/// True when `user_data` carries fdlend's hand-off tag.
pub(crate) fn is_handoff(user_data: u64) -> bool {
    user_data >> TAG_SHIFT == HANDOFF_TAG
}

/// `N` bytes from getrandom(2) (the kernel's CSPRNG; blocks only until it is
/// seeded, early at boot).
fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    let mut filled = 0;
    while filled < N {
        let rest = &mut bytes[filled..];
        // SAFETY: `rest` is writable memory of `rest.len()` bytes for the call.
        let got = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if got < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        filled += got as usize;
    }
    Ok(bytes)
}

/// A fresh random `user_data` with `tag` in its top 16 bits.
pub(crate) fn random_tagged(tag: u64) -> io::Result<u64> {
    Ok(tag << TAG_SHIFT | u64::from_ne_bytes(random_bytes()?) & ID_MASK)
}

/// One ring's key: a keyed permutation of 48-bit ids (a 4-round Feistel network
/// on 24-bit halves). Only the ring knows it, and nothing outside the ring sees
/// the ids it seals.
#[derive(Clone, Copy)]
pub(crate) struct IdKey([u32; 4]);

impl IdKey {
    pub(crate) fn random() -> io::Result<IdKey> {
        let bytes: [u8; 16] = random_bytes()?;
        let word = |i: usize| u32::from_ne_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap());
        Ok(IdKey([word(0), word(1), word(2), word(3)]))
    }

    fn round(half: u32, key: u32) -> u32 {
        // A 32-bit integer hash (murmur3's finalizer) of the half and round key.
        let mut x = (half ^ key).wrapping_mul(0x9e37_79b1);
        x ^= x >> 15;
        x = x.wrapping_mul(0x85eb_ca77);
        x ^= x >> 13;
        x & HALF_MASK
    }

    /// The `user_data` for the 48-bit `id`.
    pub(crate) fn seal(&self, id: u64) -> u64 {
        debug_assert!(id <= ID_MASK);
        let (mut left, mut right) = ((id >> HALF_BITS) as u32 & HALF_MASK, id as u32 & HALF_MASK);
        for key in self.0 {
            (left, right) = (right, left ^ IdKey::round(right, key));
        }
        USER_DATA_TAG << TAG_SHIFT | u64::from(left) << HALF_BITS | u64::from(right)
    }

    /// The id `seal` made `user_data` from (any tagged value opens to some id: the
    /// caller checks it names a pending stage).
    pub(crate) fn open(&self, user_data: u64) -> u64 {
        let (mut left, mut right) = (
            (user_data >> HALF_BITS) as u32 & HALF_MASK,
            user_data as u32 & HALF_MASK,
        );
        for key in self.0.iter().rev() {
            (left, right) = (right ^ IdKey::round(left, *key), left);
        }
        u64::from(left) << HALF_BITS | u64::from(right)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealing_is_a_permutation_its_opening_undoes() {
        let key = IdKey::random().unwrap();
        let mut seen = std::collections::HashSet::new();
        for id in (0..4096).chain([ID_MASK, ID_MASK - 1, 1 << 47, 0xabcd_ef12_3456]) {
            let sealed = key.seal(id);
            assert!(is_tagged(sealed));
            assert_eq!(key.open(sealed), id);
            assert!(seen.insert(sealed));
        }
    }

    #[test]
    fn two_rings_seal_the_same_id_differently() {
        let (a, b) = (IdKey::random().unwrap(), IdKey::random().unwrap());
        assert!((1..64).any(|id| a.seal(id) != b.seal(id)));
    }
}
