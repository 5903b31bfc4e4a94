//! k-center timing harness (in progress).
fn main() {}
