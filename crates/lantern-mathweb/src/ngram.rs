//! TODO: filled in by the ngram work.
