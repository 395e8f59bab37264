//! Criterion benchmarks of flightlog-core's hot functions live in `benches/hot.rs`
//! (`make bench-rust`); this crate holds no code of its own.
