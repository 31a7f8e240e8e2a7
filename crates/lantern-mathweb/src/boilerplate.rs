//! TODO: filled in by the boilerplate work.
