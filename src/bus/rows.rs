//! Conversions between lease-machine rows, Arrow record batches (the tables'
//! canonical schemas) and protobuf messages.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int32Array, Int32Builder, Int64Array, Int64Builder, RecordBatch, StringArray, StringBuilder};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;

use super::lease::{Event, LeaseError, Message, Status};
use crate::proto::bus as pb;
use crate::schema::{TableDef, TableId};

/// Canonical Arrow schema of `agent_messages`.
pub fn messages_schema() -> SchemaRef {
    TableDef::load(TableId::Messages).map(|d| d.arrow_schema()).unwrap_or_else(|e| panic!("bundled schema is valid: {e}"))
}

/// Canonical Arrow schema of `agent_events`.
pub fn events_schema() -> SchemaRef {
    TableDef::load(TableId::Events).map(|d| d.arrow_schema()).unwrap_or_else(|e| panic!("bundled schema is valid: {e}"))
}

fn strings<'a>(n: usize, f: impl Iterator<Item = &'a str>) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(n, n * 16);
    for s in f {
        b.append_value(s);
    }
    Arc::new(b.finish())
}

fn longs(n: usize, f: impl Iterator<Item = i64>) -> ArrayRef {
    let mut b = Int64Builder::with_capacity(n);
    b.extend(f.map(Some));
    Arc::new(b.finish())
}

fn ints(n: usize, f: impl Iterator<Item = i32>) -> ArrayRef {
    let mut b = Int32Builder::with_capacity(n);
    b.extend(f.map(Some));
    Arc::new(b.finish())
}

/// Rows of `agent_messages` as a batch in canonical column order.
pub fn messages_batch(ms: &[Message]) -> Result<RecordBatch, ArrowError> {
    let n = ms.len();
    let cols: Vec<ArrayRef> = vec![
        strings(n, ms.iter().map(|m| m.message_id.as_str())),
        longs(n, ms.iter().map(|m| m.ts)),
        longs(n, ms.iter().map(|m| m.ingest_ts)),
        strings(n, ms.iter().map(|m| m.topic.as_str())),
        strings(n, ms.iter().map(|m| m.session_id.as_str())),
        strings(n, ms.iter().map(|m| m.task_id.as_str())),
        strings(n, ms.iter().map(|m| m.agent_id.as_str())),
        strings(n, ms.iter().map(|m| m.role.as_str())),
        strings(n, ms.iter().map(|m| m.msg_type.as_str())),
        strings(n, ms.iter().map(|m| m.payload_json.as_str())),
        strings(n, ms.iter().map(|m| m.payload_blob_ref.as_str())),
        ints(n, ms.iter().map(|m| m.priority)),
        ints(n, ms.iter().map(|m| m.ttl_ms)),
        strings(n, ms.iter().map(|m| m.lease_owner.as_str())),
        longs(n, ms.iter().map(|m| m.lease_expires_ts)),
        strings(n, ms.iter().map(|m| m.status.as_str())),
        ints(n, ms.iter().map(|m| m.retry_count)),
        longs(n, ms.iter().map(|m| m.lease_epoch)),
        longs(n, ms.iter().map(|m| m.version)),
        longs(n, ms.iter().map(|m| m.updated_ts)),
    ];
    RecordBatch::try_new(messages_schema(), cols)
}

/// Rows of `agent_events` as a batch in canonical column order.
pub fn events_batch(es: &[Event]) -> Result<RecordBatch, ArrowError> {
    let n = es.len();
    let cols: Vec<ArrayRef> = vec![
        strings(n, es.iter().map(|e| e.event_id.as_str())),
        longs(n, es.iter().map(|e| e.ts)),
        strings(n, es.iter().map(|e| e.agent_id.as_str())),
        strings(n, es.iter().map(|e| e.session_id.as_str())),
        strings(n, es.iter().map(|e| e.message_id.as_str())),
        strings(n, es.iter().map(|e| e.event)),
        strings(n, es.iter().map(|e| e.details_json.as_str())),
    ];
    RecordBatch::try_new(events_schema(), cols)
}

/// Reads a column as strings ("" for null or missing).
fn str_col<'a>(b: &'a RecordBatch, name: &str) -> Option<&'a StringArray> {
    b.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<StringArray>())
}

/// Rows of a batch of `agent_messages` (a snapshot or a Barrage delta). Nulls
/// read as "" / 0; a row with an unknown status is reported, not guessed.
pub fn messages_from_batch(b: &RecordBatch) -> Vec<Result<Message, LeaseError>> {
    let s = |name: &str, i: usize| str_col(b, name).filter(|c| !c.is_null(i)).map(|c| c.value(i).to_string()).unwrap_or_default();
    let l = |name: &str, i: usize| {
        b.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<Int64Array>()).filter(|c| !c.is_null(i)).map(|c| c.value(i)).unwrap_or(0)
    };
    let n32 = |name: &str, i: usize| {
        b.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<Int32Array>()).filter(|c| !c.is_null(i)).map(|c| c.value(i)).unwrap_or(0)
    };
    (0..b.num_rows())
        .map(|i| {
            let status = s("status", i);
            let status = if status.is_empty() { Status::Queued } else { Status::parse(&status)? };
            Ok(Message {
                message_id: s("message_id", i),
                ts: l("ts", i),
                ingest_ts: l("ingest_ts", i),
                topic: s("topic", i),
                session_id: s("session_id", i),
                task_id: s("task_id", i),
                agent_id: s("agent_id", i),
                role: s("role", i),
                msg_type: s("msg_type", i),
                payload_json: s("payload_json", i),
                payload_blob_ref: s("payload_blob_ref", i),
                priority: n32("priority", i),
                ttl_ms: n32("ttl_ms", i),
                lease_owner: s("lease_owner", i),
                lease_expires_ts: l("lease_expires_ts", i),
                status,
                retry_count: n32("retry_count", i),
                lease_epoch: l("lease_epoch", i),
                version: l("version", i),
                updated_ts: l("updated_ts", i),
            })
        })
        .collect()
}

/// A message as the API returns it.
pub fn to_proto(m: &Message) -> pb::Message {
    pb::Message {
        message_id: m.message_id.clone(),
        ts: m.ts,
        ingest_ts: m.ingest_ts,
        topic: m.topic.clone(),
        session_id: m.session_id.clone(),
        task_id: m.task_id.clone(),
        agent_id: m.agent_id.clone(),
        role: m.role.clone(),
        msg_type: m.msg_type.clone(),
        payload_json: m.payload_json.clone(),
        payload_blob_ref: m.payload_blob_ref.clone(),
        priority: m.priority,
        ttl_ms: m.ttl_ms,
        lease_owner: m.lease_owner.clone(),
        lease_expires_ts: m.lease_expires_ts,
        status: m.status.as_str().to_string(),
        retry_count: m.retry_count,
        lease_epoch: m.lease_epoch,
        version: m.version,
        updated_ts: m.updated_ts,
    }
}

/// A submitted message from the API.
pub fn from_proto(n: pb::NewMessage) -> super::lease::NewMessage {
    super::lease::NewMessage {
        message_id: n.message_id,
        topic: n.topic,
        session_id: n.session_id,
        task_id: n.task_id,
        agent_id: n.agent_id,
        role: n.role,
        msg_type: n.msg_type,
        payload_json: n.payload_json,
        payload_blob_ref: n.payload_blob_ref,
        priority: n.priority,
        ttl_ms: n.ttl_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_arrow() {
        let mut st = super::super::lease::LeaseState::new(Default::default(), "r");
        let mut ch = super::super::lease::Changes::default();
        let n = super::super::lease::NewMessage { topic: "t".into(), payload_json: "{\"a\":1}".into(), priority: 3, ..Default::default() };
        st.publish(5, vec![n], || "m1".into(), &mut ch).unwrap();
        let b = messages_batch(&ch.messages).unwrap();
        let back: Vec<Message> = messages_from_batch(&b).into_iter().map(Result::unwrap).collect();
        assert_eq!(back, ch.messages);
        assert_eq!(events_batch(&ch.events).unwrap().num_rows(), 1);
    }
}
