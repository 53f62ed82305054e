//! Adapters that join two named boundaries, so neither needs to know the other and call control
//! needs to know neither:
//!
//! - [`sip_media_anchor`]: the media engine behind the SIP gateway's SDP for forwarded (B2BUA)
//!   calls ([`EngineAnchor`] implements `sip_gateway::MediaAnchor`).
//! - [`crm_stream_outbox`]: the CRM writer's shared outbox on the state store's stream
//!   ([`StreamOutbox`] implements `crm_store::Outbox`).
//!
//! The binary plugs them in.

pub mod crm_stream_outbox;
pub mod sip_media_anchor;

pub use crm_stream_outbox::StreamOutbox;
pub use sip_media_anchor::EngineAnchor;
