//! Prometheus registry, the /metrics text encoder and tracing setup.
