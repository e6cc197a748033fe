//! NATS: connecting (the API consumes event triggers over it, the deliverers publish lifecycle
//! events to it) and keeping the JetStream streams both use.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

pub use async_nats;

use crate::settings::NatsSettings;

/// The subjects of lifecycle events.
pub const LIFECYCLE_SUBJECTS: &str = "orchestration.>";

/// Connects without waiting: the client keeps (re)connecting in the background, so the
/// service starts and serves while NATS is away. `None` without a NATS URL.
pub async fn connect(settings: &NatsSettings) -> Result<Option<async_nats::Client>, String> {
    let Some(url) = &settings.url else {
        return Ok(None);
    };
    let mut options = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .name("orchestration")
        .connection_timeout(Duration::from_secs(3));
    if let (Some(user), Some(pass)) = (&settings.user, &settings.password) {
        options = options.user_and_password(user.clone(), pass.clone());
    }
    if let Some(token) = &settings.token {
        options = options.token(token.clone());
    }
    if let Some(path) = &settings.creds_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| format!("ORCH_NATS_CREDS_FILE {}: {e}", path.display()))?;
    }
    let client = options
        .connect(url.as_str())
        .await
        .map_err(|e| format!("NATS_URL {url}: {e}"))?;
    Ok(Some(client))
}

pub fn is_connected(client: &async_nats::Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

/// Makes sure stream `name` exists and captures `subjects`, adding them to a stream that exists
/// without them. The trigger stream and the lifecycle stream may be one stream (by default
/// they are): each user adds its own subjects.
pub async fn ensure_stream(
    js: &jetstream::Context,
    name: &str,
    subjects: &[String],
) -> Result<stream::Stream, async_nats::Error> {
    let mut last_error = None;
    // Two processes may create or extend the stream at once: the loser looks again.
    for _ in 0..3 {
        match js.get_stream(name).await {
            Ok(mut existing) => {
                let mut config = existing.info().await?.config.clone();
                let missing: Vec<&String> = subjects
                    .iter()
                    .filter(|s| !config.subjects.contains(s))
                    .collect();
                if missing.is_empty() {
                    return Ok(existing);
                }
                config.subjects.extend(missing.into_iter().cloned());
                match js.update_stream(config).await {
                    Ok(_) => return Ok(js.get_stream(name).await?),
                    Err(e) => last_error = Some(e.into()),
                }
            }
            Err(_) => {
                let config = stream::Config {
                    name: name.to_string(),
                    subjects: subjects.to_vec(),
                    // A batch retried after a partial publish sends its first events again:
                    // the stream drops what it saw within this window.
                    duplicate_window: Duration::from_secs(600),
                    ..Default::default()
                };
                match js.create_stream(config).await {
                    Ok(created) => return Ok(created),
                    Err(e) => last_error = Some(e.into()),
                }
            }
        }
    }
    Err(last_error.unwrap_or_else(|| "the stream could not be created".into()))
}
