//! Per-call session state machine tying SIP, media, IVR and ACD, and its async driver.
