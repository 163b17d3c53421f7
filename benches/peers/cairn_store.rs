//! cairn itself: one shared `Store` with default options but for the durability mode; each
//! writer saves its own job.

use std::path::Path;

use cairn::{Durability, Options, Store};

use crate::measure::{BenchResult, Peer, Saver};
use crate::payload::Document;

pub struct CairnPeer {
    store: Store,
    document: Document,
}

impl CairnPeer {
    pub fn open(dir: &Path, durability: Durability, document: &Document) -> BenchResult<CairnPeer> {
        let store = Store::open_with(dir.join("store"), Options::default().durability(durability))?;
        Ok(CairnPeer {
            store,
            document: document.clone(),
        })
    }
}

impl Peer for CairnPeer {
    fn saver(&self, writer: usize) -> BenchResult<Box<dyn Saver + '_>> {
        Ok(Box::new(CairnSaver {
            store: &self.store,
            job: format!("job-{writer}"),
            document: self.document.clone(),
            save_number: 0,
        }))
    }

    fn finish(self: Box<Self>) -> BenchResult<()> {
        Ok(self.store.close()?)
    }
}

struct CairnSaver<'a> {
    store: &'a Store,
    job: String,
    document: Document,
    save_number: u64,
}

impl Saver for CairnSaver<'_> {
    fn save(&mut self) -> BenchResult<()> {
        self.save_number += 1;
        self.document.stamp(self.save_number);
        self.store.save(&self.job, "extract", &self.document)?;
        Ok(())
    }
}
