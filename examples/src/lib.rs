//! Runnable examples of openexpert live in `examples/` (`cargo run --release -p openexpert-examples --example NAME`).
