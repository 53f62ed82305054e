//! IVR scripts: model, loader, validator and a pure interpreter (events in, commands out).
