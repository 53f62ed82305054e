//! Outbound dialer: pure pacing policies, campaign and compliance rules, and a discrete-event simulator.
