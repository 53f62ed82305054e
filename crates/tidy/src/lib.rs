//! Nothing to ship: the workspace's boundaries are checked by `tests/boundaries.rs`
//! (`cargo test -p tidy`), reading `cargo metadata` and the crates' sources.
