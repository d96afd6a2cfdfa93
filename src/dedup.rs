//! The sans-IO decision core of a deduplicating receiver.
//!
//! Given what the store knows about a key (`Option<&Record>`) and an incoming delivery (its
//! payload [`Fingerprint`] and the current time), [`decide`] says what to do. It performs no
//! I/O and keeps no state, so the same code runs inside the Stateright models (the idempotent
//! house), the in-memory store and the SQLite inbox.

use serde::Serialize;
use sha2::{Digest, Sha256};
use std::fmt;

/// Longest key accepted, in bytes (Stripe's idempotency-key limit).
pub const MAX_KEY_LEN: usize = 255;

/// Milliseconds on the receiver's clock.
pub type Millis = u64;

/// An owner token for a lease. Tokens only grow: a takeover must use a higher token.
pub type Token = u64;

/// SHA-256 of a delivery's payload, truncated to 128 bits; a reused key with a different
/// fingerprint is a conflict. 128 bits keep accidental collisions out of reach (2^-128 per
/// reused key) at half the bytes per remembered key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Fingerprint(pub [u8; 16]);

impl Fingerprint {
    /// The fingerprint of `payload`.
    pub fn of(payload: &[u8]) -> Self {
        let digest = Sha256::digest(payload);
        let mut prefix = [0; 16];
        prefix.copy_from_slice(&digest[..16]);
        Fingerprint(prefix)
    }

    /// Lowercase hex, for display and JSON.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight hex digits are plenty to tell payloads apart in a story or a state dump.
        write!(f, "#{}", &self.to_hex()[..8])
    }
}

/// Where a key's delivery stands in the store.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Stage<R> {
    /// Claimed by `owner` until `lease_until`; the effect may or may not have run.
    InProgress { owner: Token, lease_until: Millis },
    /// The effect ran and produced `result`, recorded at `at`.
    Completed { result: R, at: Millis },
}

/// What the store remembers about one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Record<R> {
    pub fingerprint: Fingerprint,
    pub stage: Stage<R>,
}

impl<R> Record<R> {
    /// A record for an effect that completed with `result` at `at`.
    pub fn completed(fingerprint: Fingerprint, result: R, at: Millis) -> Self {
        Record {
            fingerprint,
            stage: Stage::Completed { result, at },
        }
    }

    /// A record for a claim held by `owner` until `lease_until`.
    pub fn claimed(fingerprint: Fingerprint, owner: Token, lease_until: Millis) -> Self {
        Record {
            fingerprint,
            stage: Stage::InProgress { owner, lease_until },
        }
    }
}

/// How long completed keys are remembered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum Retention {
    /// Forever (the default, and the only setting that is exactly-once for any redelivery delay).
    #[default]
    Forever,
    /// Keys completed more than this many milliseconds ago are forgotten; a redelivery after
    /// the window is applied again (the dedup-window model's counterexample).
    Window(Millis),
}

/// What to do with an incoming delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision<'a, R> {
    /// Never seen: run the effect and record the key with it.
    Apply,
    /// Seen before with the same payload and completed: return the stored result, run nothing.
    Duplicate { result: &'a R },
    /// Seen before with a *different* payload: refuse; the key was reused by mistake.
    Conflict { stored: Fingerprint },
    /// Another owner holds a live lease on this key: do not run the effect now.
    InProgress { owner: Token, lease_until: Millis },
    /// A previous owner's lease expired before it completed: the key may be claimed again
    /// with a token higher than `stale_owner` (its effect may or may not have run).
    TakeOver { stale_owner: Token },
    /// The key completed longer ago than the retention window: it is forgotten and will be
    /// applied again.
    Expired,
}

impl<R> Decision<'_, R> {
    /// True when the caller should run the effect now.
    pub fn runs_effect(&self) -> bool {
        matches!(
            self,
            Decision::Apply | Decision::TakeOver { .. } | Decision::Expired
        )
    }
}

/// Decides what to do with a delivery of a payload with `fingerprint`, given the `existing`
/// record for its key (if any), the `retention` policy and the receiver's clock `now`.
///
/// The caller must make the decision and the write it implies one atomic step (one database
/// transaction, one model step): the check-then-act model shows what happens otherwise.
pub fn decide<'a, R>(
    existing: Option<&'a Record<R>>,
    fingerprint: &Fingerprint,
    retention: Retention,
    now: Millis,
) -> Decision<'a, R> {
    let Some(record) = existing else {
        return Decision::Apply;
    };
    if let (Stage::Completed { at, .. }, Retention::Window(window)) = (&record.stage, retention) {
        // Forgotten keys are judged as new, whatever their payload.
        if now.saturating_sub(*at) > window {
            return Decision::Expired;
        }
    }
    if record.fingerprint != *fingerprint {
        return Decision::Conflict {
            stored: record.fingerprint,
        };
    }
    match &record.stage {
        Stage::Completed { result, .. } => Decision::Duplicate { result },
        Stage::InProgress { owner, lease_until } if now < *lease_until => Decision::InProgress {
            owner: *owner,
            lease_until: *lease_until,
        },
        Stage::InProgress { owner, .. } => Decision::TakeOver {
            stale_owner: *owner,
        },
    }
}

/// Why a lease holder was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum NotOwnerReason {
    /// Another worker took the key over with a higher token after the lease ended.
    TakenOver { by: Token },
    /// The key is already completed (by a takeover, or by this same lease earlier).
    Completed,
    /// Nobody holds the key (it was released, pruned, or never claimed).
    NotClaimed,
}

impl fmt::Display for NotOwnerReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotOwnerReason::TakenOver { by } => write!(f, "it was taken over by token {by}"),
            NotOwnerReason::Completed => write!(f, "it is already completed"),
            NotOwnerReason::NotClaimed => write!(f, "nobody holds it"),
        }
    }
}

/// Whether the lease with `token` still owns the key whose current record is `record`: the
/// check every store makes before `complete` or `release` writes (fencing), so a stale owner
/// cannot record over a newer one.
pub fn owns<R>(record: Option<&Record<R>>, token: Token) -> Result<(), NotOwnerReason> {
    match record.map(|r| &r.stage) {
        Some(Stage::InProgress { owner, .. }) if *owner == token => Ok(()),
        Some(Stage::InProgress { owner, .. }) => Err(NotOwnerReason::TakenOver { by: *owner }),
        Some(Stage::Completed { .. }) => Err(NotOwnerReason::Completed),
        None => Err(NotOwnerReason::NotClaimed),
    }
}

/// Why a key was refused before any lookup.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the idempotency key is empty; give each order a unique, non-empty ID")]
    Empty,
    #[error("the idempotency key is {len} bytes; the limit is {MAX_KEY_LEN} bytes")]
    TooLong { len: usize },
    #[error("the idempotency key contains a NUL byte, which PostgreSQL text cannot hold; use printable IDs")]
    Nul,
}

/// Checks a key against the rules every store enforces: non-empty, at most [`MAX_KEY_LEN`]
/// bytes, no NUL (so a key valid in one store is valid in all).
pub fn validate_key(key: &str) -> Result<(), KeyError> {
    match key.len() {
        0 => Err(KeyError::Empty),
        len if len > MAX_KEY_LEN => Err(KeyError::TooLong { len }),
        _ if key.contains('\0') => Err(KeyError::Nul),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(s: &str) -> Fingerprint {
        Fingerprint::of(s.as_bytes())
    }

    #[test]
    fn a_new_key_is_applied() {
        assert_eq!(
            decide::<()>(None, &fp("pie"), Retention::Forever, 0),
            Decision::Apply
        );
    }

    #[test]
    fn a_completed_key_with_the_same_payload_is_a_duplicate() {
        let r = Record::completed(fp("pie"), "kept".to_string(), 5);
        let d = decide(Some(&r), &fp("pie"), Retention::Forever, 1_000_000);
        assert_eq!(
            d,
            Decision::Duplicate {
                result: &"kept".to_string()
            }
        );
        assert!(!d.runs_effect());
    }

    #[test]
    fn a_reused_key_with_another_payload_is_a_conflict() {
        let r = Record::completed(fp("pie"), (), 5);
        assert_eq!(
            decide(Some(&r), &fp("calzone"), Retention::Forever, 6),
            Decision::Conflict { stored: fp("pie") }
        );
    }

    #[test]
    fn a_live_lease_is_in_progress_and_an_expired_one_may_be_taken_over() {
        let r: Record<()> = Record::claimed(fp("pie"), 7, 100);
        assert_eq!(
            decide(Some(&r), &fp("pie"), Retention::Forever, 99),
            Decision::InProgress {
                owner: 7,
                lease_until: 100
            }
        );
        let d = decide(Some(&r), &fp("pie"), Retention::Forever, 100);
        assert_eq!(d, Decision::TakeOver { stale_owner: 7 });
        assert!(d.runs_effect());
    }

    #[test]
    fn a_key_past_the_retention_window_is_forgotten() {
        let r = Record::completed(fp("pie"), (), 10);
        assert!(matches!(
            decide(Some(&r), &fp("pie"), Retention::Window(50), 60),
            Decision::Duplicate { .. }
        ));
        assert_eq!(
            decide(Some(&r), &fp("pie"), Retention::Window(50), 61),
            Decision::Expired
        );
    }

    #[test]
    fn only_the_current_lease_owns_a_key() {
        let claimed: Record<()> = Record::claimed(fp("pie"), 7, 100);
        assert_eq!(owns(Some(&claimed), 7), Ok(()));
        assert_eq!(
            owns(Some(&claimed), 6),
            Err(NotOwnerReason::TakenOver { by: 7 })
        );
        let done = Record::completed(fp("pie"), (), 5);
        assert_eq!(owns(Some(&done), 7), Err(NotOwnerReason::Completed));
        assert_eq!(owns::<()>(None, 7), Err(NotOwnerReason::NotClaimed));
    }

    #[test]
    fn keys_are_validated() {
        assert_eq!(validate_key(""), Err(KeyError::Empty));
        assert_eq!(validate_key("a\0b"), Err(KeyError::Nul));
        assert_eq!(validate_key(&"k".repeat(255)), Ok(()));
        assert_eq!(
            validate_key(&"k".repeat(256)),
            Err(KeyError::TooLong { len: 256 })
        );
    }
}
