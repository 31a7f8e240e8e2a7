//! TODO: filled in by the extract work.
