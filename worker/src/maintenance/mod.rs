//! Background loops. The [`rescuer`] has a `run_once` that returns what it repaired and a loop
//! that logs, counts and carries on after errors, safe to run in many processes at once; the
//! [`sampler`] reads the gauges only a look at the database can tell.

pub mod rescuer;
pub mod sampler;

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `pass` every `interval` until `stop` fires. A pass that overruns delays the next one
/// instead of letting missed ticks fire back to back.
pub async fn every<F, Fut>(interval: Duration, stop: CancellationToken, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        pass().await;
    }
}
