//! LM runtime.
