//! Lifeboat messages as SQS messages: the protobuf payload base64 in the body (SQS bodies are
//! XML-safe text), the subject and headers as String message attributes, and FIFO ids within
//! the limits SQS sets.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName};
use base64::Engine;
use bytes::Bytes;
use lifeboat_common::bus::{BusError, OutgoingMessage};
use sha2::{Digest, Sha256};

/// The original subject (a queue carries many: every request id has its own status subject).
pub const SUBJECT_ATTRIBUTE: &str = "lifeboat.subject";
/// Headers that do not fit an attribute of their own, as a JSON object.
pub const HEADERS_ATTRIBUTE: &str = "lifeboat.headers";
/// SQS takes at most this many message attributes.
const MAX_ATTRIBUTES: usize = 10;
const MAX_ATTRIBUTE_NAME: usize = 256;
/// MessageDeduplicationId and MessageGroupId: at most 128 printable ASCII characters.
const MAX_FIFO_ID: usize = 128;
/// An empty payload (a protobuf message with every field at its default) still needs a body:
/// SQS refuses empty ones. Not valid base64 on its own, so it cannot be mistaken for data.
const EMPTY_BODY: &str = "=";
const STRING: &str = "String";

/// A message ready for SendMessage or a SendMessageBatch entry.
#[derive(Clone, Debug)]
pub struct EncodedMessage {
    pub subject: String,
    pub body: String,
    pub attributes: HashMap<String, MessageAttributeValue>,
    /// Set for FIFO queues only.
    pub fifo: Option<FifoIds>,
    /// What SQS counts against its message and batch size limits.
    pub size: usize,
}

#[derive(Clone, Debug)]
pub struct FifoIds {
    pub group_id: String,
    pub deduplication_id: String,
}

/// Encodes `message` for a FIFO queue (`fifo`) or a standard one.
///
/// On a FIFO queue the dedupe id becomes both the MessageDeduplicationId and the
/// MessageGroupId: SQS holds back the rest of a group while one of its messages is in flight,
/// so one group per task keeps tasks independent (one waiting on a snapshot copy for hours
/// blocks nothing else), and deduplication stays within a group, which allows the
/// high-throughput FIFO mode. Without a dedupe id the message gets fresh random ids. On a
/// standard queue the dedupe id is dropped: SQS cannot deduplicate there.
pub fn encode(message: &OutgoingMessage, fifo: bool) -> Result<EncodedMessage, BusError> {
    let body = if message.payload.is_empty() {
        EMPTY_BODY.to_string()
    } else {
        base64::engine::general_purpose::STANDARD.encode(&message.payload)
    };
    let attributes = encode_attributes(message)?;
    let fifo = fifo.then(|| {
        let id = message.dedupe_id.as_deref().map(fifo_id).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        FifoIds { group_id: id.clone(), deduplication_id: id }
    });
    let size = body.len()
        + attributes
            .iter()
            .map(|(name, value)| name.len() + STRING.len() + value.string_value().map_or(0, str::len))
            .sum::<usize>();
    Ok(EncodedMessage { subject: message.subject.clone(), body, attributes, fifo, size })
}

/// A dedupe id as SQS takes it: as given when it fits, else its SHA-256 (the same id always
/// gives the same hash, so deduplication still holds).
pub fn fifo_id(id: &str) -> String {
    if !id.is_empty() && id.len() <= MAX_FIFO_ID && id.bytes().all(|b| b.is_ascii_graphic()) {
        return id.to_string();
    }
    Sha256::digest(id.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn encode_attributes(message: &OutgoingMessage) -> Result<HashMap<String, MessageAttributeValue>, BusError> {
    let mut seen = std::collections::HashSet::new();
    let (mut direct, mut packed) = (Vec::new(), BTreeMap::new());
    for (name, value) in &message.headers {
        // Like JetStream deliveries, the first value of a repeated header wins.
        if !seen.insert(name.as_str()) {
            continue;
        }
        if is_attribute_name(name) && is_attribute_value(value) {
            direct.push((name.as_str(), value.as_str()));
        } else {
            packed.insert(name.as_str(), value.as_str());
        }
    }
    // One attribute is the subject; if anything is packed, another is the packed headers.
    let room = MAX_ATTRIBUTES - 1;
    if direct.len() > room || !packed.is_empty() {
        for (name, value) in direct.drain((room - 1).min(direct.len())..) {
            packed.insert(name, value);
        }
    }
    let attribute = |value: &str| {
        MessageAttributeValue::builder().data_type(STRING).string_value(value).build().map_err(|e| BusError::Publish {
            subject: message.subject.clone(),
            message: format!("message attribute: {e}"),
        })
    };
    let mut attributes = HashMap::new();
    attributes.insert(SUBJECT_ATTRIBUTE.to_string(), attribute(&message.subject)?);
    for (name, value) in direct {
        attributes.insert(name.to_string(), attribute(value)?);
    }
    if !packed.is_empty() {
        let json = serde_json::to_string(&packed).map_err(|e| BusError::Publish {
            subject: message.subject.clone(),
            message: format!("headers as JSON: {e}"),
        })?;
        attributes.insert(HEADERS_ATTRIBUTE.to_string(), attribute(&json)?);
    }
    Ok(attributes)
}

/// SQS attribute names: letters, digits, `_`, `-` and `.`, no leading, trailing or double dot,
/// nothing reserved for AWS. Lifeboat's own attribute names are kept for Lifeboat.
fn is_attribute_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !name.is_empty()
        && name.len() <= MAX_ATTRIBUTE_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && !lower.starts_with("aws.")
        && !lower.starts_with("amazon.")
        && !lower.starts_with("lifeboat.")
}

/// SQS refuses empty attribute values and characters outside XML 1.0.
fn is_attribute_value(value: &str) -> bool {
    !value.is_empty() && value.chars().all(is_xml_char)
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// What a received message carried, ready for a [`lifeboat_common::bus::Delivery`].
#[derive(Debug)]
pub struct Decoded {
    pub subject: Option<String>,
    pub payload: Bytes,
    pub headers: BTreeMap<String, String>,
    pub attempt: u32,
    pub published_at: Option<SystemTime>,
    /// The body was not base64: `payload` holds its raw bytes.
    pub raw_body: bool,
}

/// Decodes what SQS delivered. Never fails: a body that is not base64 is handed on as its raw
/// bytes and unreadable packed headers are skipped, so the handler still sees the message
/// and can dead-letter it and report its task as failed.
pub fn decode(
    body: &str,
    attributes: Option<&HashMap<String, MessageAttributeValue>>,
    system: Option<&HashMap<MessageSystemAttributeName, String>>,
) -> Decoded {
    let (payload, raw_body) = if body == EMPTY_BODY {
        (Bytes::new(), false)
    } else {
        match base64::engine::general_purpose::STANDARD.decode(body) {
            Ok(bytes) => (Bytes::from(bytes), false),
            Err(_) => (Bytes::copy_from_slice(body.as_bytes()), true),
        }
    };
    let mut headers = BTreeMap::new();
    let mut subject = None;
    for (name, value) in attributes.into_iter().flatten() {
        let Some(text) = value.string_value() else { continue };
        match name.as_str() {
            SUBJECT_ATTRIBUTE => subject = Some(text.to_string()),
            HEADERS_ATTRIBUTE => {
                if let Ok(packed) = serde_json::from_str::<BTreeMap<String, String>>(text) {
                    headers.extend(packed);
                }
            }
            _ => {
                headers.insert(name.clone(), text.to_string());
            }
        }
    }
    let system_value = |name: MessageSystemAttributeName| system.and_then(|map| map.get(&name));
    let attempt = system_value(MessageSystemAttributeName::ApproximateReceiveCount)
        .and_then(|count| count.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    let published_at = system_value(MessageSystemAttributeName::SentTimestamp)
        .and_then(|millis| millis.parse::<u64>().ok())
        .and_then(|millis| SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(millis)));
    Decoded { subject, payload, headers, attempt, published_at, raw_body }
}
