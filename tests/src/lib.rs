//! System tests against real peers; the tests live in `tests/`.
