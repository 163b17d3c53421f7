//! The store's shape at open: the segment size new segments get, from the store's record
//! unless the user set one (docs/FORMAT.md, "The shape file"; `Options::segment_size`).

use std::path::Path;

use crate::error::Result;
use crate::log::{Shape, ShapeSource, Storage};
use crate::options::{MAX_SEGMENT_SIZE_BYTES, MIN_SEGMENT_SIZE_BYTES, Options};

/// A segment size this build can make segments of.
fn acceptable(bytes: u64) -> bool {
    (MIN_SEGMENT_SIZE_BYTES..=MAX_SEGMENT_SIZE_BYTES).contains(&bytes) && bytes.is_multiple_of(4096)
}

/// Sets `options`' segment size to the one the store in `dir` uses from now on: the user's, if
/// set, else the store's recorded shape, else its newest segment's, else the default. Returns
/// the shape a writer must record once the store is open (`None`: it is recorded already).
pub(super) fn resolve(
    storage: &dyn Storage,
    dir: &Path,
    options: &mut Options,
) -> Result<Option<Shape>> {
    let found = Shape::of_store(storage, dir, acceptable)?;
    let store_size = found.map(|(shape, _)| shape.segment_size_bytes);
    if options.segment_size_set {
        if let Some(store_size) = store_size.filter(|&size| size != options.segment_size_bytes) {
            tracing::warn!(
                dir = %dir.display(),
                store_segment_size = store_size,
                segment_size = options.segment_size_bytes,
                "cairn: the segment size set differs from the store's; new segments use the \
                 size set, and a writer records it as the store's shape"
            );
        }
    } else if let Some(store_size) = store_size {
        options.segment_size_bytes = store_size;
    }
    let shape = Shape {
        segment_size_bytes: options.segment_size_bytes,
    };
    let recorded = matches!(found, Some((found, ShapeSource::Recorded)) if found == shape);
    Ok((!recorded).then_some(shape))
}
