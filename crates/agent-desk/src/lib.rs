//! HTTP and WebSocket API: agent CTI, supervisor wallboard, admin API and the static web UI.
