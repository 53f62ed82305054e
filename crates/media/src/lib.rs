//! RTP media engine: port pool, G.711, RFC 4733 and in-band DTMF, prompts, bridge, recorder, answering-machine analysis.
//!
//! Pure parts (packet formats, codecs, detectors, analysers, statistics) live in their own modules and never do
//! IO or read a clock; the async [`engine`] owns every RTP socket and drives them.

pub mod amd;
pub mod dtmf;
pub mod engine;
pub mod g711;
pub mod prompt;
pub mod quality;
pub mod recorder;
pub mod rtcp;
pub mod rtp;
pub mod sdp;
pub mod stream;
pub mod wav;
