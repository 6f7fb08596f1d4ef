//! `cargo bench` entry: runs the benchmark example's scenarios.
//!
//! The scenarios live in `examples/bench/` (run them with
//! `cargo run --release --example bench`); this entry runs the same code so
//! that `cargo bench` works too. Pass `-- --quick` for the small version.

#[path = "../examples/bench/main.rs"]
mod bench;

fn main() {
    bench::main_entry();
}
