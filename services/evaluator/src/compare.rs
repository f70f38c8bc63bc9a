//! Experiment comparison (being built).
