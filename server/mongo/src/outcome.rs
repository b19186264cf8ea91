//! What became of a batch: a failed `insert_many` told apart per document.
//!
//! An error of the whole batch (network, no primary, timeouts, a command
//! error) is no per-document outcome ([`classify`] answers `None`): the
//! caller retries the batch. A per-document error is looked at by its code
//! ([`doc_error`]) — a duplicate key is "already written", a transient code
//! (not primary, shutting down, interrupted, lock or time limits) retries
//! that document, a permanent one (validation, too large, bad value) drops
//! it at once, and an unknown code is retried [`UNKNOWN_TRIES`] times, then
//! dropped. A write concern error retries every document not refused for
//! good (the unique index makes that idempotent). A document over
//! [`MAX_DOCUMENT`] is set apart before the batch is sent ([`oversize`]):
//! the driver would refuse the whole batch for it.

use mongodb::bson::Document;
use mongodb::error::{ErrorKind, WriteFailure};

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;
/// Per-document codes that pass: no primary, node recovering or shutting
/// down, interrupted, lock, time and network limits. The document is retried.
const TRANSIENT_CODES: [i32; 20] =
    [6, 7, 24, 46, 50, 64, 89, 91, 112, 134, 189, 262, 9001, 10058, 10107, 11600, 11601, 11602, 13435, 13436];
/// Per-document codes that will never pass: bad value, type mismatch,
/// invalid field names, document validation, too large, key too long.
const PERMANENT_CODES: [i32; 10] = [2, 14, 52, 55, 56, 57, 121, 10334, 17280, 17419];
/// Attempts for a document refused with a code in neither list.
pub const UNKNOWN_TRIES: u8 = 3;
/// The largest document MongoDB stores (`maxBsonObjectSize`). The driver
/// refuses a whole batch, before sending it, when one of its documents is
/// larger, so such a document is set apart first.
pub const MAX_DOCUMENT: usize = 16 * 1024 * 1024;
/// MongoDB's code for a document over that size.
pub(crate) const TOO_LARGE: i32 = 10334;

/// What became of a batch that MongoDB answered (every message not
/// listed is stored, newly or already).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchResult {
    /// Messages refused for good: (index in the batch, code, MongoDB's
    /// message as it gave it, possibly over several lines).
    pub rejected: Vec<(usize, i32, String)>,
    /// Messages to write again (index in the batch, ascending).
    pub retry: Vec<usize>,
    /// Messages refused as a duplicate `(room, seq)` (index in the batch):
    /// stored already — or another message holds their seq (see
    /// [`Mongo::insert`](crate::Mongo::insert), which tells the two apart).
    pub duplicates: Vec<usize>,
    /// Messages whose `(room, seq)` MongoDB holds as *another* message
    /// (index in the batch, the stored message's id): a seq given twice,
    /// so this one is not stored.
    pub conflicts: Vec<(usize, String)>,
}

/// What a per-document error code means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocError {
    /// Already written (a retried batch, or a resend).
    Duplicate,
    /// Passes: write the document again.
    Transient,
    /// Will never pass: drop it.
    Permanent,
    /// Not known: retried a few times, then dropped.
    Unknown,
}

/// The BSON size of `d` if it is over [`MAX_DOCUMENT`] (only a document
/// whose strings come near the limit is measured).
pub(crate) fn oversize(d: &Document) -> Option<usize> {
    let strings: usize = d.values().map(|v| v.as_str().map_or(16, str::len)).sum();
    if strings < MAX_DOCUMENT - 4096 {
        return None;
    }
    let size = mongodb::bson::to_vec(d).map_or(usize::MAX, |v| v.len());
    (size > MAX_DOCUMENT).then_some(size)
}

/// The meaning of a per-document write error code.
pub fn doc_error(code: i32) -> DocError {
    match code {
        DUPLICATE_KEY => DocError::Duplicate,
        c if TRANSIENT_CODES.contains(&c) => DocError::Transient,
        c if PERMANENT_CODES.contains(&c) => DocError::Permanent,
        _ => DocError::Unknown,
    }
}

/// Splits a failed `insert_many` into per-document outcomes; `None` when
/// the error concerns the whole batch (network, server selection,
/// timeouts, a command error), which is then retried as a whole. A write
/// concern error retries every document not refused for good. `tries[i]`
/// is how many times document `i` was refused before.
pub fn classify(e: &mongodb::error::Error, tries: &[u8]) -> Option<BatchResult> {
    let (errors, concern) = match &*e.kind {
        ErrorKind::InsertMany(failure) => {
            (failure.write_errors.clone().unwrap_or_default(), failure.write_concern_error.is_some())
        }
        ErrorKind::Write(WriteFailure::WriteError(we)) if we.code == DUPLICATE_KEY => {
            return Some(BatchResult { duplicates: (0..tries.len()).collect(), ..BatchResult::default() })
        }
        _ => return None,
    };
    let mut out = BatchResult::default();
    let mut failed = vec![false; tries.len()];
    for we in errors {
        let Some(slot) = failed.get_mut(we.index) else { continue };
        *slot = true;
        let give_up = match doc_error(we.code) {
            DocError::Duplicate => {
                out.duplicates.push(we.index);
                continue;
            }
            DocError::Transient => false,
            DocError::Permanent => true,
            DocError::Unknown => tries[we.index].saturating_add(1) >= UNKNOWN_TRIES,
        };
        if give_up {
            out.rejected.push((we.index, we.code, we.message));
        } else {
            out.retry.push(we.index);
        }
    }
    if concern {
        out.retry.extend((0..tries.len()).filter(|&i| !failed[i]));
    }
    out.retry.sort_unstable();
    out.retry.dedup();
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use mongodb::bson::doc;

    use super::*;

    /// A failed insert_many as the driver reports it (from the server's reply).
    fn insert_many_error(write_errors: &[(usize, i32)], concern: bool) -> mongodb::error::Error {
        let errors: Vec<Document> = write_errors
            .iter()
            .map(|&(i, c)| doc! {"index": i as i64, "code": c, "errmsg": format!("code {c}")})
            .collect();
        let mut failure = doc! {"writeErrors": errors};
        if concern {
            failure
                .insert("writeConcernError", doc! {"code": 64, "codeName": "WriteConcernFailed", "errmsg": "waiting"});
        }
        let failure: mongodb::error::InsertManyError = mongodb::bson::from_document(failure).unwrap();
        mongodb::error::Error::from(ErrorKind::InsertMany(failure))
    }

    #[test]
    fn per_document_errors_are_told_apart() {
        assert_eq!(doc_error(11000), DocError::Duplicate);
        for code in [10107, 13435, 189, 91, 11600, 50, 262, 112] {
            assert_eq!(doc_error(code), DocError::Transient, "{code}");
        }
        for code in [121, 10334, 2, 17280] {
            assert_eq!(doc_error(code), DocError::Permanent, "{code}");
        }
        assert_eq!(doc_error(8), DocError::Unknown);
    }

    #[test]
    fn a_poison_document_is_dropped_and_the_rest_of_the_batch_goes_on() {
        // 0 duplicate (already written), 1 fails validation, 2 no primary, 3 written.
        let e = insert_many_error(&[(0, 11000), (1, 121), (2, 10107)], false);
        let r = classify(&e, &[0; 4]).expect("per-document outcome");
        assert_eq!(r.rejected, vec![(1, 121, "code 121".to_string())]);
        assert_eq!(r.retry, vec![2]);
        assert_eq!(r.duplicates, vec![0], "set apart for the conflict check");
        // Unknown codes: retried, then dropped on the last try.
        let e = insert_many_error(&[(0, 8), (1, 8)], false);
        let r = classify(&e, &[0, UNKNOWN_TRIES - 1]).unwrap();
        assert_eq!((r.retry, r.rejected.len(), r.rejected[0].0), (vec![0], 1, 1));
        // A write concern error retries everything not refused for good.
        let e = insert_many_error(&[(1, 121)], true);
        let r = classify(&e, &[0; 3]).unwrap();
        assert_eq!((r.retry, r.rejected.len()), (vec![0, 2], 1));
        // Only duplicates: nothing to retry or drop (Mongo::insert then
        // checks whose message MongoDB holds under their seq).
        let only = BatchResult { duplicates: vec![0], ..BatchResult::default() };
        assert_eq!(classify(&insert_many_error(&[(0, 11000)], false), &[0; 2]), Some(only));
    }

    #[test]
    fn errors_of_the_whole_batch_retry_it() {
        let io =
            mongodb::error::Error::from(ErrorKind::Io(Arc::new(std::io::Error::from(std::io::ErrorKind::TimedOut))));
        assert_eq!(classify(&io, &[0; 5]), None, "network/timeouts: the batch is retried");
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(classify(&mongodb::error::Error::from(ErrorKind::Io(Arc::new(reset))), &[0; 1]), None);
    }

    #[test]
    fn only_a_document_over_the_limit_is_set_apart() {
        let small = doc! {"room": "r", "message": "hi"};
        assert_eq!(oversize(&small), None);
        let near = doc! {"room": "r", "message": "x".repeat(MAX_DOCUMENT - 100)};
        assert_eq!(oversize(&near), None, "under the limit, measured");
        let over = doc! {"room": "r", "message": "x".repeat(MAX_DOCUMENT)};
        assert!(oversize(&over).is_some_and(|size| size > MAX_DOCUMENT));
    }
}
