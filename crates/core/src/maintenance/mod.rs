//! Background repair loops. Each has a `run_once` that returns what it did and a loop that
//! logs, counts and carries on after errors; all are safe to run in many processes at once.

pub mod pruner;
pub mod rescuer;
