//! End-to-end tests: the real `sextant` binary, started on free ports with its own data
//! directory. Build it first (`cargo build -p sextant`; `tests/run-all.sh` does).
//! All e2e tests live in this one test binary.

mod harness;

mod bad_input;
mod disk_full;
mod distributed;
mod dlq;
mod durability;
mod grpc;
mod online_eval;
mod prompts;
mod slow_clients;
mod strict_input;
mod tenancy;
