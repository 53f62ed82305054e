//! The CRM store: SQL schema and migrations (SQLite and PostgreSQL), repositories, durable interaction writer, reports.
