//! retrieve (in progress)
