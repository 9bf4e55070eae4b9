//! Transition: the line-protocol encoder moved to [`crate::line_protocol`], on the ground floor.
//! Nothing in the crate uses this path any more; it stays only because removing it means
//! editing `sink/mod.rs`'s module list. Delete both after the merge.

pub use crate::line_protocol::*;
