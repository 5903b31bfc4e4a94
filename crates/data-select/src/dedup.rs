//! dedup (in progress)
