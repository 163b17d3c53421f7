//! One test body on the real file system and on the simulated disk, the way okaywal runs each
//! of its tests on files and in memory: the test takes a [`Disk`], and
//! [`on_both_disks!`](crate::on_both_disks) makes a `#[test]` of it for each kind.

use std::path::Path;

use cairn::testing::SimDisk;
use cairn::{Options, RecoveryMode, RecoveryReport, Store};

use super::sim;

/// Where a test's store lives.
pub enum Disk {
    /// A temporary directory of the real file system (removed when dropped).
    Real(tempfile::TempDir),
    /// The simulated disk, with the store in [`sim::DIR`].
    Sim(SimDisk),
}

impl Disk {
    /// A new temporary directory.
    pub fn real() -> Disk {
        Disk::Real(tempfile::tempdir().expect("tempdir"))
    }

    /// A new simulated disk.
    pub fn sim() -> Disk {
        Disk::Sim(SimDisk::new())
    }

    /// Another empty disk of the same kind.
    pub fn fresh(&self) -> Disk {
        match self {
            Disk::Real(_) => Disk::real(),
            Disk::Sim(_) => Disk::sim(),
        }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        match self {
            Disk::Real(temp) => temp.path(),
            Disk::Sim(_) => Path::new(sim::DIR),
        }
    }

    /// [`Store::open`]: default options.
    pub fn open(&self) -> cairn::Result<Store> {
        self.open_with(Options::default())
    }

    /// [`Store::open_with`]: opens (creating if needed) the store for writing.
    pub fn open_with(&self, options: Options) -> cairn::Result<Store> {
        match self {
            Disk::Real(temp) => Store::open_with(temp.path(), options),
            Disk::Sim(disk) => sim::open(disk, options),
        }
    }

    /// [`Store::open_read_only`]: default options.
    pub fn open_read_only(&self) -> cairn::Result<Store> {
        self.open_read_only_with(Options::default())
    }

    /// [`Store::open_read_only_with`].
    pub fn open_read_only_with(&self, options: Options) -> cairn::Result<Store> {
        match self {
            Disk::Real(temp) => Store::open_read_only_with(temp.path(), options),
            Disk::Sim(disk) => sim::open_read_only(disk, options),
        }
    }

    /// [`Store::verify`] on real files. `verify` takes a path of the real file system, so on
    /// the simulated disk a read-only open in `SkipCorrupted` mode stands in for it: the same
    /// scan of every record, reporting what it finds instead of refusing.
    pub fn verify(&self) -> cairn::Result<RecoveryReport> {
        match self {
            Disk::Real(temp) => Store::verify(temp.path()),
            Disk::Sim(disk) => {
                let options = Options::default().recovery(RecoveryMode::SkipCorrupted);
                Ok(sim::open_read_only(disk, options)?
                    .recovery_report()
                    .clone())
            }
        }
    }

    /// Replaces (or creates) the file `name` of the store's directory.
    pub fn write_file(&self, name: &str, bytes: &[u8]) {
        let path = self.dir().join(name);
        match self {
            Disk::Real(_) => std::fs::write(&path, bytes).expect("write file"),
            Disk::Sim(disk) => disk.overwrite_file(&path, bytes.to_vec()),
        }
    }
}

/// Makes each named function, a test that takes a [`Disk`], a `#[test]` on both disks:
/// `real::NAME` on a temporary directory and `sim::NAME` on the simulated disk. Invoke it at
/// the root of the test file.
#[macro_export]
macro_rules! on_both_disks {
    ($($test:ident),+ $(,)?) => {
        mod real {
            $(
                #[test]
                fn $test() {
                    super::$test($crate::common::disk::Disk::real());
                }
            )+
        }

        mod sim {
            $(
                #[test]
                fn $test() {
                    super::$test($crate::common::disk::Disk::sim());
                }
            )+
        }
    };
}
