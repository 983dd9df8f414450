//! Passwords: argon2id hashes, computed off the async threads.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use parley_http_kit::ApiError;

/// Argon2 takes 19 MiB and tens of milliseconds per hash, on purpose. Hashes run
/// on a fixed set of threads, one per core: a burst of registrations or logins
/// queues instead of starting a thread (and a 19 MiB allocator arena) per request,
/// which once held a benchmark server at 750 MiB after 128 hashes.
fn hash_on_pool<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> impl std::future::Future<Output = Result<T, ApiError>> {
    type Job = Box<dyn FnOnce() + Send>;
    static POOL: std::sync::OnceLock<std::sync::mpsc::SyncSender<Job>> = std::sync::OnceLock::new();
    let sender = POOL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(1024);
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })
                .expect("spawning a password hashing thread");
        }
        tx
    });
    let (reply, answer) = tokio::sync::oneshot::channel();
    let sent = sender.clone();
    async move {
        // 1,024 hashes already queued is a flood: shed it rather than grow a backlog.
        sent.try_send(Box::new(move || {
            let _ = reply.send(job());
        }))
        .map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(_) => {
                ApiError::Unavailable("too many logins in progress; retry shortly".into())
            }
            std::sync::mpsc::TrySendError::Disconnected(_) => {
                ApiError::internal(anyhow::anyhow!("password hashing pool stopped"))
            }
        })?;
        answer
            .await
            .map_err(|_| ApiError::internal(anyhow::anyhow!("password hashing job lost")))
    }
}

/// Hashes a password with argon2id (slow on purpose, so off the async threads).
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    hash_on_pool(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::internal(anyhow::anyhow!("argon2: {e}")))
    })
    .await?
}

/// Checks a password against a stored argon2 hash.
pub async fn verify_password(password: String, hash: String) -> Result<bool, ApiError> {
    hash_on_pool(move || {
        let parsed = PasswordHash::new(&hash)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("stored hash: {e}")))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passwords_verify_only_with_the_right_password() {
        let hash = hash_password("correct horse".into()).await.unwrap();
        assert!(verify_password("correct horse".into(), hash.clone())
            .await
            .unwrap());
        assert!(!verify_password("wrong horse".into(), hash).await.unwrap());
    }
}
