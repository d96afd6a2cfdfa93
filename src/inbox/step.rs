//! One delivery's way through the decision core, shared by every store: check the key,
//! fingerprint the payload, read the clock once ([`Request`]); run [`crate::dedup::decide`] on
//! what the store holds and say what happens next ([`Request::admit`]): answer with the stored
//! result, refuse, or go ahead and write the record it returns ([`Go`]). The stores only load
//! and persist records, in one transaction around this.

use super::{Claim, InboxError, Lease, Outcome, END_OF_TIME};
use crate::dedup::{self, Decision, Fingerprint, KeyError, Millis, Record, Retention, Token};
use std::time::Duration;

/// What a store keeps for one key: its record and when its history began.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Kept {
    pub record: Record<Vec<u8>>,
    pub created_at: Millis,
}

impl Kept {
    /// What [`super::InboxStore::get`] answers for `key`.
    pub fn into_entry(self, key: String) -> super::Entry {
        super::Entry {
            key,
            record: self.record,
            created_at: self.created_at,
        }
    }
}

/// A delivery or claim, checked and stamped.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Request<'a> {
    pub key: &'a str,
    pub fingerprint: Fingerprint,
    pub now: Millis,
    pub retention: Retention,
}

/// The core's answer before any effect runs.
pub(crate) enum Admit {
    /// Already done with the same payload: answer with the stored result, run nothing.
    Done(Vec<u8>),
    /// Run the effect (or grant the claim), then write what [`Go`] builds.
    Go(Go),
}

/// Permission to run the effect, and how to write the key afterwards.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Go {
    /// The key's history began here: now for a new or forgotten key, earlier for a takeover.
    pub created_at: Millis,
    /// The stale owner, when this takes an expired lease over.
    pub took_over_from: Option<Token>,
    fingerprint: Fingerprint,
    now: Millis,
}

impl<'a> Request<'a> {
    /// Checks `key`, fingerprints `payload` and stamps `now` (clamped to [`END_OF_TIME`]).
    pub fn new(
        key: &'a str,
        payload: &[u8],
        now: Millis,
        retention: Retention,
    ) -> Result<Self, KeyError> {
        dedup::validate_key(key)?;
        Ok(Request {
            key,
            fingerprint: Fingerprint::of(payload),
            now: now.min(END_OF_TIME),
            retention,
        })
    }

    /// Runs [`dedup::decide`] on what the store holds for the key.
    pub fn admit(&self, kept: Option<&Kept>) -> Result<Admit, InboxError> {
        let go = |created_at, took_over_from| {
            Ok(Admit::Go(Go {
                created_at,
                took_over_from,
                fingerprint: self.fingerprint,
                now: self.now,
            }))
        };
        match dedup::decide(
            kept.map(|k| &k.record),
            &self.fingerprint,
            self.retention,
            self.now,
        ) {
            Decision::Duplicate { result } => Ok(Admit::Done(result.clone())),
            Decision::Conflict { stored } => Err(InboxError::Conflict {
                key: self.key.to_owned(),
                stored,
                incoming: self.fingerprint,
            }),
            Decision::InProgress { owner, lease_until } => Err(InboxError::InProgress {
                key: self.key.to_owned(),
                owner,
                lease_until,
                retry_after: Duration::from_millis(lease_until.saturating_sub(self.now)),
            }),
            // A takeover keeps the key's history; a new or forgotten key starts a new one.
            Decision::TakeOver { stale_owner } => {
                go(kept.map_or(self.now, |k| k.created_at), Some(stale_owner))
            }
            Decision::Apply | Decision::Expired => go(self.now, None),
        }
    }

    /// [`Self::admit`] for the transactional path: `Err(outcome)` when there is nothing to run.
    pub fn admit_delivery(&self, kept: Option<&Kept>) -> Result<Result<Go, Outcome>, InboxError> {
        Ok(match self.admit(kept)? {
            Admit::Done(result) => Err(Outcome::Duplicate(result)),
            Admit::Go(go) => Ok(go),
        })
    }

    /// [`Self::admit`] for the lease path: `Err(claim)` when there is nothing to claim.
    pub fn admit_claim(&self, kept: Option<&Kept>) -> Result<Result<Go, Claim>, InboxError> {
        Ok(match self.admit(kept)? {
            Admit::Done(result) => Err(Claim::Duplicate(result)),
            Admit::Go(go) => Ok(go),
        })
    }
}

impl Go {
    /// The record of a delivery whose effect returned `result`.
    pub fn completed(&self, result: Vec<u8>) -> Kept {
        Kept {
            record: Record::completed(self.fingerprint, result, self.now),
            created_at: self.created_at,
        }
    }

    /// The record of a claim by `token` for `lease`, and the lease to hand out.
    pub fn claimed(&self, key: &str, token: Token, lease: Duration) -> (Kept, Lease) {
        let lease_until = lease_end(self.now, lease);
        let kept = Kept {
            record: Record::claimed(self.fingerprint, token, lease_until),
            created_at: self.created_at,
        };
        let lease = Lease {
            key: key.to_owned(),
            token,
            lease_until,
            took_over_from: self.took_over_from,
        };
        (kept, lease)
    }
}

/// When a lease taken at `now` ends: saturating at [`END_OF_TIME`], which every store can
/// hold, so "forever" stays forever instead of wrapping to a time long past.
pub(crate) fn lease_end(now: Millis, lease: Duration) -> Millis {
    let ms: Millis = lease.as_millis().try_into().unwrap_or(Millis::MAX);
    now.saturating_add(ms).min(END_OF_TIME)
}

/// The error for a lease holder whose token does not own the key's current `record`, or `None`
/// when it does.
pub(crate) fn not_owner(lease: &Lease, record: Option<&Record<Vec<u8>>>) -> Option<InboxError> {
    crate::dedup::owns(record, lease.token)
        .err()
        .map(|reason| InboxError::NotOwner {
            key: lease.key.clone(),
            token: lease.token,
            reason,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_saturate_at_the_end_of_time() {
        assert_eq!(lease_end(5, Duration::from_millis(10)), 15);
        assert_eq!(lease_end(5, Duration::MAX), END_OF_TIME);
        assert_eq!(lease_end(END_OF_TIME, Duration::from_secs(1)), END_OF_TIME);
    }

    #[test]
    fn requests_are_checked_and_clamped() {
        assert!(Request::new("", b"p", 0, Retention::Forever).is_err());
        let r = Request::new("k", b"p", u64::MAX, Retention::Forever).unwrap();
        assert_eq!(r.now, END_OF_TIME);
    }
}
