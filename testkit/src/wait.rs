//! Polling until something holds, for tests of processes that converge on their own.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(INTERVAL).await;
    }
}

/// Polls `check` until it returns `Ok`, or panics after `timeout` with `what`, the last
/// `Err` and `context()` (say, the tail of a log).
pub async fn wait_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
    context: impl Fn() -> String,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() <= deadline,
                "timed out after {timeout:?} waiting for {what}\nlast observation: {last}\n{}",
                context()
            ),
        }
        tokio::time::sleep(INTERVAL).await;
    }
}
