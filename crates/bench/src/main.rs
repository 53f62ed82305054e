//! `bench`: benchmark runner.
fn main() {}
