//! The file the executor reads: where it may live, its contents, and the one source
//! of randomness that both fills it and drives the request stream.

use crate::config::Config;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A directory on a real disk: `O_DIRECT` needs one, and tmpfs refuses it.
pub fn data_dir(config: &Config) -> Result<PathBuf, String> {
    let candidates = match &config.dir {
        Some(dir) => vec![dir.clone()],
        None => vec![std::env::temp_dir(), "/var/tmp".into(), ".".into()],
    };
    for dir in candidates {
        match nix::sys::statfs::statfs(&dir) {
            Ok(fs) if fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC => return Ok(dir),
            _ => continue,
        }
    }
    Err("no directory on a real disk (tmpfs refuses O_DIRECT); pass --dir".into())
}

pub fn write_data_file(path: &Path, mib: usize) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    let mut chunk = vec![0u8; 1 << 20];
    for mib_index in 0..mib {
        for (i, byte) in chunk.iter_mut().enumerate() {
            *byte = byte_at((mib_index << 20 | i) as u64);
        }
        file.write_all(&chunk)?;
    }
    file.sync_all()
}

/// The byte the data file holds at `position`, so readers can check what they read.
pub fn byte_at(position: u64) -> u8 {
    (mix(position / 8) >> 7) as u8
}

/// splitmix64: the request stream's randomness, the same for both modes.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
