//! TODO: filled in by the warc work.
