//! Criterion benches of openexpert's hot paths live in `benches/benches/`; side-by-side
//! comparisons with the Python anchors in `benches/compare/`.
