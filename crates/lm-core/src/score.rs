//! score (in progress)
