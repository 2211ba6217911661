//! One PutRecords call and how its outcome is read: which entries failed, whether records
//! landed on another shard than the lane's (the shard map is stale: a reshard), and whether a
//! request that failed as a whole may have landed all the same.

use std::sync::Arc;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{DisplayErrorContext, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

use super::lane::Outgoing;

/// Which lane a request came from: destination stream and shard lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The destination stream (the writer's index).
    pub destination: usize,
    /// The shard lane within it.
    pub lane: usize,
}

/// A request's outcome, with its batch handed back.
pub type Sent = (Route, Vec<Outgoing>, Result<Answer, Failure>);

/// What an answered PutRecords said.
#[derive(Debug)]
pub struct Answer {
    /// `failed[i]`: entry `i` has an error code (it is not in the stream).
    pub failed: Vec<bool>,
    /// Entries stored on another shard than the lane's (never counted for a lane of no known
    /// shard).
    pub misplaced: usize,
}

/// A request that failed as a whole.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong.
    pub message: Arc<str>,
    /// No answer came (timeout, lost connection, HTTP 500): the records may have landed.
    pub unanswered: bool,
}

/// One PutRecords call of `batch` to `stream` from the lane of shard `shard_id` (empty: no
/// known shard), the batch handed back with the outcome (without the records' data: see
/// [`request_entries`]).
pub async fn put_records(
    client: Client,
    stream: String,
    route: Route,
    shard_id: Arc<str>,
    mut batch: Vec<Outgoing>,
) -> Sent {
    let result = match request_entries(&mut batch) {
        Ok(entries) => call(client, stream, shard_id, entries).await,
        Err(failure) => Err(failure),
    };
    (route, batch, result)
}

/// The request's records for `batch`. Each record's data moves into the request (`data` is
/// left empty): after the call only the user records (`entries`) are looked at, a failed one
/// being queued again and sent anew. An aggregate is the batch's own buffer, so it moves
/// without a copy; a plain record shares its frame's pooled chunk and is copied.
pub fn request_entries(batch: &mut [Outgoing]) -> Result<Vec<PutRecordsRequestEntry>, Failure> {
    batch
        .iter_mut()
        .map(|o| {
            PutRecordsRequestEntry::builder()
                .partition_key(o.key.as_ref())
                .data(Blob::new(Vec::from(std::mem::take(&mut o.data))))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Failure {
            message: format!("cannot build the request: {e}").into(),
            unanswered: false,
        })
}

/// One PutRecords call of `entries` (from [`request_entries`]) to `stream` from the lane of
/// shard `shard_id` (empty: no known shard).
pub async fn call(
    client: Client,
    stream: String,
    shard_id: Arc<str>,
    entries: Vec<PutRecordsRequestEntry>,
) -> Result<Answer, Failure> {
    let sent = entries.len();
    let result = client
        .put_records()
        .stream_name(stream)
        .set_records(Some(entries))
        .send()
        .await;
    match result {
        Ok(out) if out.records().len() == sent => {
            let records = out.records();
            let misplaced = records
                .iter()
                .filter(|r| r.error_code().is_none() && !shard_id.is_empty())
                .filter(|r| r.shard_id().is_some_and(|id| id != shard_id.as_ref()))
                .count();
            let failed = records.iter().map(|r| r.error_code().is_some()).collect();
            Ok(Answer { failed, misplaced })
        }
        // Some of the records may be in the stream: which ones cannot be told.
        Ok(out) => Err(Failure {
            message: format!(
                "PutRecords answered {} entries for {sent} sent",
                out.records().len(),
            )
            .into(),
            unanswered: true,
        }),
        Err(e) => Err(Failure {
            unanswered: unanswered(&e),
            message: DisplayErrorContext(&e).to_string().into(),
        }),
    }
}

/// Whether a failed request may have been processed all the same: no answer came (a timeout,
/// a connection lost after it was sent, an unreadable answer) or Kinesis answered HTTP 500
/// (`InternalFailure`: outcome unknown). An error answer otherwise (throttling, 4xx, 503), a
/// request that could not be built and a refused connection mean it was not.
fn unanswered<E>(error: &SdkError<E, HttpResponse>) -> bool
where
    E: std::error::Error + 'static,
{
    match error {
        SdkError::ConstructionFailure(_) => false,
        SdkError::ServiceError(e) => e.raw().status().as_u16() == 500,
        SdkError::DispatchFailure(_) => !refused_connection(error),
        _ => true,
    }
}

/// Whether `error`'s causes include a refused TCP connection (nothing was sent).
fn refused_connection(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        next = e.source();
    }
    false
}
