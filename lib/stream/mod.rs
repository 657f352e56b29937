//! The one worker model of the record stages: a reader, parallel workers
//! and a writer joined by bounded channels, results put back in input
//! order, pausing and progress.

pub mod pause;
pub mod pipeline;
pub mod progress;
pub mod reorder;
