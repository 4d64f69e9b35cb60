//! Argon2id password hashing off the async runtime, bounded by a [`HashGate`] so
//! the memory it takes stays fixed whatever the request rate. The policy new
//! passwords meet is the domain's ([`kabinet_domain::accounts::password`]).

use argon2::password_hash::{Output, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use kabinet_domain::accounts::secrets::{random_bytes, SecretError};

/// Hashing failed (never for well-formed input).
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// Argon2 refused its parameters or input (built without `std`, its errors
    /// are not `std::error::Error`, so they are kept as values, not sources).
    #[error("password hashing failed: {0}")]
    Argon2(argon2::Error),
    /// A PHC string could not be made or read.
    #[error("password hash format: {0}")]
    Format(argon2::password_hash::Error),
    /// The stored PHC string lacks a salt or an output.
    #[error("the stored hash has no salt or no output")]
    Incomplete,
    /// No randomness for a salt.
    #[error(transparent)]
    Salt(#[from] SecretError),
    /// The blocking thread that hashed panicked or was cancelled.
    #[error("the hashing thread failed: {0}")]
    Thread(#[from] tokio::task::JoinError),
}

impl From<argon2::Error> for HashError {
    fn from(e: argon2::Error) -> Self {
        HashError::Argon2(e)
    }
}

impl From<argon2::password_hash::Error> for HashError {
    fn from(e: argon2::password_hash::Error) -> Self {
        HashError::Format(e)
    }
}

/// Argon2id with OWASP's minimum: 19 MiB, 2 passes, 1 lane.
fn hasher() -> Result<Argon2<'static>, HashError> {
    let params = Params::new(19 * 1024, 2, 1, None)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// The PHC string of `password` with a fresh salt, computed on a blocking thread
/// (unbounded: servers go through a [`HashGate`]).
pub async fn hash(password: &str) -> Result<String, HashError> {
    let password = password.to_string();
    tokio::task::spawn_blocking(move || hash_now(&password)).await?
}

fn hash_now(password: &str) -> Result<String, HashError> {
    hash_in(password, &mut working_memory())
}

/// Fresh working memory for one hashing with [`hasher`]'s parameters.
fn working_memory() -> Vec<Block> {
    vec![Block::default(); HASH_MEMORY_MIB * 1024]
}

/// The PHC string of `password` with a fresh salt, hashed in `memory`.
fn hash_in(password: &str, memory: &mut [Block]) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    random_bytes(&mut salt)?;
    let argon = hasher()?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon.hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, memory)?;
    let salt = SaltString::encode_b64(&salt)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: argon.params().try_into()?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out)?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `phc`, hashed in `memory` (or in
/// memory of its own when `phc` asks for more, as a hash made with other
/// parameters may). The comparison takes constant time.
fn verify_in(password: &str, phc: &str, memory: &mut [Block]) -> Result<bool, HashError> {
    let parsed = PasswordHash::new(phc)?;
    let params = Params::try_from(&parsed)?;
    let algorithm = Algorithm::try_from(parsed.algorithm)?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()?
        .unwrap_or_default();
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(HashError::Incomplete);
    };
    let mut salt_bytes = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_bytes)?;
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(algorithm, version, params.clone());
    let mut own;
    let memory = if memory.len() >= params.block_count() {
        memory
    } else {
        own = vec![Block::default(); params.block_count()];
        own.as_mut_slice()
    };
    argon.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, memory)?;
    Ok(Output::new(&out)? == expected)
}

/// Whether `password` matches the stored PHC string, checked on a blocking thread
/// (unbounded: servers go through a [`HashGate`]). With no stored hash a dummy
/// one is checked, so unknown logins cost the same time.
pub async fn verify(password: &str, stored: Option<&str>) -> Result<bool, HashError> {
    let password = password.to_string();
    let stored = stored.map(str::to_string);
    tokio::task::spawn_blocking(move || verify_now(&password, stored.as_deref())).await?
}

fn verify_now(password: &str, stored: Option<&str>) -> Result<bool, HashError> {
    verify_in_memory(password, stored, &mut working_memory())
}

/// [`verify_in`] against `stored`, or against a dummy hash when there is none,
/// so unknown logins cost the same time; only a real hash can match.
fn verify_in_memory(
    password: &str,
    stored: Option<&str>,
    memory: &mut [Block],
) -> Result<bool, HashError> {
    match stored {
        Some(phc) => verify_in(password, phc, memory),
        None => {
            verify_in(password, &dummy_hash()?, memory)?;
            Ok(false)
        }
    }
}

/// Memory one Argon2id hashing takes (the `m` parameter), in MiB.
pub const HASH_MEMORY_MIB: usize = 19;

/// Why a gated hashing did not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// Every hashing slot stayed taken for the whole queue wait.
    #[error("every password hashing slot is busy")]
    Busy { retry_after: std::time::Duration },
    #[error(transparent)]
    Failed(#[from] HashError),
}

/// Bounds how many passwords are hashed or checked at once, so the memory they
/// take stays within `slots × 19 MiB` whatever the request rate. A request waits
/// for a slot at most `queue_wait`, then is told the server is busy.
#[derive(Clone, Debug)]
pub struct HashGate {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    limit: usize,
    queue_wait: std::time::Duration,
    running: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    peak: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Working memory of finished hashings, kept for the next ones: at most one
    /// buffer per slot ever exists, so the memory is allocated once and never
    /// handed back to an allocator that would keep it per thread.
    spare: std::sync::Arc<std::sync::Mutex<Vec<Vec<Block>>>>,
}

impl Default for HashGate {
    /// One slot per core, waiting at most three seconds.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        HashGate::new(cores, std::time::Duration::from_secs(3))
    }
}

impl HashGate {
    /// At most `limit` (at least one) hashings at once; a request waits `queue_wait` for a slot.
    pub fn new(limit: usize, queue_wait: std::time::Duration) -> Self {
        let limit = limit.max(1);
        HashGate {
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(limit)),
            limit,
            queue_wait,
            running: Default::default(),
            peak: Default::default(),
            spare: Default::default(),
        }
    }

    /// How many hashings may run at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The most hashings that ever ran at once through this gate.
    pub fn peak(&self) -> usize {
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut [Block]) -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, GateError> {
        use std::sync::atomic::Ordering;
        let permit =
            match tokio::time::timeout(self.queue_wait, self.slots.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) | Err(_) => {
                    return Err(GateError::Busy {
                        retry_after: self.queue_wait.max(std::time::Duration::from_secs(1)),
                    })
                }
            };
        let running = self.running.clone();
        let peak = self.peak.clone();
        let spare = self.spare.clone();
        tokio::task::spawn_blocking(move || {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let taken = spare.lock().ok().and_then(|mut spare| spare.pop());
            let mut memory = taken.unwrap_or_else(working_memory);
            let result = work(&mut memory);
            if let Ok(mut spare) = spare.lock() {
                spare.push(memory);
            }
            running.fetch_sub(1, Ordering::SeqCst);
            // The slot is given back only when the memory is.
            drop(permit);
            result
        })
        .await
        .map_err(HashError::from)?
        .map_err(GateError::Failed)
    }

    /// [`hash`] within the bound.
    pub async fn hash(&self, password: &str) -> Result<String, GateError> {
        let password = password.to_string();
        self.run(move |memory| hash_in(&password, memory)).await
    }

    /// [`verify`] within the bound; unknown logins (no stored hash) cost the same.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool, GateError> {
        let password = password.to_string();
        let stored = stored.map(str::to_string);
        self.run(move |memory| verify_in_memory(&password, stored.as_deref(), memory))
            .await
    }
}

fn dummy_hash() -> Result<String, HashError> {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(h) = DUMMY.get() {
        return Ok(h.clone());
    }
    let h = hash_in("no account has this password", &mut working_memory())?;
    Ok(DUMMY.get_or_init(|| h).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_gate_bounds_concurrent_hashings_and_answers_busy() {
        let gate = HashGate::new(1, std::time::Duration::from_millis(10));
        let tries: Vec<_> = (0..4)
            .map(|_| {
                let gate = gate.clone();
                tokio::spawn(async move { gate.verify("some-password-1", None).await })
            })
            .collect();
        let mut busy = 0;
        for t in tries {
            match t.await.expect("join") {
                Ok(ok) => assert!(!ok),
                Err(GateError::Busy { .. }) => busy += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(
            busy >= 1,
            "a one-slot gate with a 10 ms queue must turn some away"
        );
        assert_eq!(gate.peak(), 1);
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let h = hash("зимний-вечер-42").await.expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("зимний-вечер-42", Some(&h)).await.expect("verify"));
        assert!(!verify("зимний-вечер-43", Some(&h)).await.expect("verify"));
        assert!(!verify("no account has this password", None)
            .await
            .expect("verify"));
    }

    #[test]
    fn hashes_made_in_kept_memory_agree_with_the_reference_implementation() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let mut memory = working_memory();
        let ours = hash_in("зимний-вечер-42", &mut memory).expect("hash");
        let parsed = PasswordHash::new(&ours).expect("a PHC string");
        assert!(hasher()
            .expect("hasher")
            .verify_password("зимний-вечер-42".as_bytes(), &parsed)
            .is_ok());
        let salt = SaltString::encode_b64(b"reference-salt-1").expect("salt");
        let reference = hasher()
            .expect("hasher")
            .hash_password("зимний-вечер-42".as_bytes(), &salt)
            .expect("hash")
            .to_string();
        // The same memory again, dirty from the last hashing.
        assert!(verify_in("зимний-вечер-42", &reference, &mut memory).expect("verify"));
        assert!(!verify_in("зимний-вечер-43", &reference, &mut memory).expect("verify"));
        // A hash asking for more memory than is kept still verifies.
        let bigger = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(32 * 1024, 1, 1, None).expect("params"),
        )
        .hash_password("зимний-вечер-42".as_bytes(), &salt)
        .expect("hash")
        .to_string();
        assert!(verify_in("зимний-вечер-42", &bigger, &mut memory).expect("verify"));
    }

    #[tokio::test]
    async fn the_gate_keeps_at_most_one_working_memory_per_slot() {
        let gate = HashGate::new(2, std::time::Duration::from_secs(60));
        let tries: Vec<_> = (0..6)
            .map(|i| {
                let gate = gate.clone();
                tokio::spawn(async move { gate.verify(&format!("some-password-{i}"), None).await })
            })
            .collect();
        for t in tries {
            assert!(!t.await.expect("join").expect("checked"));
        }
        let kept = gate.spare.lock().expect("lock").len();
        assert!(
            (1..=2).contains(&kept),
            "{kept} working memories kept for 2 slots"
        );
    }
}
