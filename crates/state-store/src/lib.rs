//! Live shared state behind one trait: in-memory for one node, Redis for many.
