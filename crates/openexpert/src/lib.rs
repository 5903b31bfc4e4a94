//! openexpert
