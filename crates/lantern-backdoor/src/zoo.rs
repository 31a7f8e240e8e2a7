//! TODO: filled in by the zoo work.
