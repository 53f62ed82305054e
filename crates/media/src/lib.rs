//! RTP media engine: port pool, G.711, RFC 4733 and in-band DTMF, prompts, bridge, recorder, answering-machine analysis.
