//! baselines (in progress)
