//! Server-side evaluators (being built).
