//! Criterion benches (in progress).
fn main() {}
