//! TODO: filled in by the triggers work.
