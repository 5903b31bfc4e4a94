//! vendi (in progress)
