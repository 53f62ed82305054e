//! IVR scripts: model, loader, validator and a pure interpreter (events in, commands out).
//!
//! - [`load_dir`] reads a directory of TOML flows and their prompts into an immutable [`FlowSet`], or
//!   returns every problem with file, line and node ([`ValidationError`]).
//! - [`FlowSetHandle`] holds the set in force and swaps in a reloaded one only when it is valid.
//! - [`IvrSession`] runs one call: `handle(now, IvrEvent) -> Vec<IvrCommand>`.
//!
//! The script format is documented in `ivr-scripts/README.md` at the top of the repository.

pub mod analysis;
pub mod compile;
pub mod duration;
pub mod error;
pub mod io;
pub mod load;
pub mod model;
pub mod numbers;
pub mod raw;
pub mod schedule;
pub mod session;
pub mod wav;

pub use compile::{FlowSource, PromptSource, Sources, compile};
pub use error::{ValidationError, render_errors};
pub use io::{
    CallInfo, CustomerRecord, IvrCommand, IvrEvent, IvrLog, LookupKey, LookupResult, PromptFile, QueueEvent,
    QueueSnapshot, RequestId, TimerId, WebhookResult,
};
pub use load::{FlowSetHandle, check_dir, load_dir, read_sources};
pub use model::{Flow, FlowSet, Node, NodeKind, TransferTarget};
pub use session::{IvrSession, IvrState, Outcome, Phase, SessionError, Value};
