//! The interaction timeline of one call (event numbering), kept with the pure session machine.

pub use call_session::timeline::Timeline;
