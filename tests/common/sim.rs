//! The store on the simulated disk (`cairn::testing`, feature `testing`): one store per disk,
//! in [`DIR`].

use std::path::{Path, PathBuf};

use cairn::testing::{self, SimDisk};
use cairn::{Options, Store};

use super::files::segment_name;

/// The directory of the store on a simulated disk.
pub const DIR: &str = "/sim/store";

/// Opens the store of `disk` for writing.
pub fn open(disk: &SimDisk, options: Options) -> cairn::Result<Store> {
    testing::open(disk, Path::new(DIR), options, false)
}

/// Opens the store of `disk` read-only.
pub fn open_read_only(disk: &SimDisk, options: Options) -> cairn::Result<Store> {
    testing::open(disk, Path::new(DIR), options, true)
}

/// The path of segment `id` of the store.
pub fn segment_path(id: u64) -> PathBuf {
    Path::new(DIR).join(segment_name(id))
}

/// The segment files of the store (live images) with their bytes, oldest first.
pub fn segment_images(disk: &SimDisk) -> Vec<(PathBuf, Vec<u8>)> {
    disk.file_names()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .map(|p| {
            let bytes = disk.read_file(&p).unwrap_or_default();
            (p, bytes)
        })
        .collect()
}
