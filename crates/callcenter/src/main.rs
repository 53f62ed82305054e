//! The `callcenter` binary.
fn main() {}
