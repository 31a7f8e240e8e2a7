//! TODO: filled in by the langid work.
