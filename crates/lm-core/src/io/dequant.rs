//! dequant (in progress)
