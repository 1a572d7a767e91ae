//! The cold part of an event log: runs of old events packed into deflate-compressed blocks.
//!
//! An idle session still holds its full ring for replay, and nearly all of a ring's memory is
//! its SSE frames. Frames are JSON with the same keys, ids and vocabulary over and over, so a
//! block of consecutive frames compresses several times over. [`EventLog::compact`] moves the
//! hot (uncompressed) events of a quiet log into [`ColdBlock`]s; a subscriber that reads back
//! into them (a reconnect, or one that lagged) gets frames decompressed once per block and
//! shared: while any subscriber still holds a frame of a block, every other reader of that
//! block gets the same decompressed bytes.
//!
//! [`EventLog::compact`]: super::EventLog::compact

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use miniz_oxide::deflate::core::{
    compress, create_comp_flags_from_zip_params, CompressorOxide, TDEFLFlush, TDEFLStatus,
};
use parking_lot::Mutex;

use super::{data_start_of, LoggedEvent};
use crate::models::EventKind;

/// Most events packed into one block.
pub(super) const BLOCK_EVENTS: usize = 128;

/// Deflate level: 6 (zlib's default) packs about as tight as 9 on SSE frames and is several
/// times faster; compaction runs off the hot path, on idle logs only.
const LEVEL: u8 = 2;

/// Why a cold block could not be read back (a bug or memory corruption: blocks are only
/// written by this module).
#[derive(Debug, thiserror::Error)]
#[error("compressed event block {first_seq}..{end_seq} is unreadable: {reason}")]
pub(super) struct ColdError {
    first_seq: u64,
    end_seq: u64,
    reason: String,
}

/// A run of consecutive events, compressed.
pub(super) struct ColdBlock {
    first_seq: u64,
    count: u32,
    raw_len: u32,
    compressed: Box<[u8]>,
    /// End offset of each frame, kept only when the frames cannot be told apart by their
    /// `\n\n` terminator (data with a raw newline; never produced by `serde_json`).
    ends: Option<Box<[u32]>>,
    /// The decompressed block while any reader still holds one of its frames.
    decoded: Mutex<Weak<Decoded>>,
}

/// A decompressed block: its bytes and each frame's end offset.
struct Decoded {
    raw: Vec<u8>,
    ends: Vec<u32>,
}

/// Lets a [`Bytes`] share a decompressed block (every frame is a slice of it).
struct DecodedBytes(Arc<Decoded>);

impl AsRef<[u8]> for DecodedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0.raw
    }
}

impl ColdBlock {
    /// Packs `events` (consecutive seqs, at least one, at most `u32::MAX` bytes in all).
    /// `None` when they are not packable that way.
    pub(super) fn pack(events: &[LoggedEvent]) -> Option<Self> {
        let first = events.first()?;
        let contiguous = events
            .iter()
            .zip(first.seq..)
            .all(|(ev, seq)| ev.seq == seq);
        if !contiguous {
            return None;
        }
        let raw_len: usize = events.iter().map(|ev| ev.frame.len()).sum();
        let raw_len_u32 = u32::try_from(raw_len).ok()?;
        let mut ends = Vec::with_capacity(events.len());
        let mut splittable = true;
        let compressed = with_packer(|packer| {
            packer.raw.clear();
            for ev in events {
                packer.raw.extend_from_slice(&ev.frame);
                ends.push(u32::try_from(packer.raw.len()).ok()?);
                let data = &ev.frame[ev.data_start as usize..ev.frame.len().saturating_sub(2)];
                splittable &= !data.contains(&b'\n');
            }
            packer.deflate()
        })?;
        Some(Self {
            first_seq: first.seq,
            count: u32::try_from(events.len()).ok()?,
            raw_len: raw_len_u32,
            compressed,
            ends: (!splittable).then(|| ends.into_boxed_slice()),
            decoded: Mutex::new(Weak::new()),
        })
    }

    /// The first seq held.
    pub(super) fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// The seq after the last one held.
    pub(super) fn end_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count)
    }

    /// Number of events held.
    pub(super) fn count(&self) -> usize {
        self.count as usize
    }

    /// Bytes held (compressed data plus bookkeeping).
    pub(super) fn heap_bytes(&self) -> usize {
        self.compressed.len()
            + self.ends.as_ref().map_or(0, |e| e.len() * 4)
            + std::mem::size_of::<Self>()
    }

    /// Bytes of frames held (uncompressed).
    pub(super) fn raw_bytes(&self) -> usize {
        self.raw_len as usize
    }

    /// Up to `max` events from `from_seq` (which must lie in this block) on, in order.
    pub(super) fn events(&self, from_seq: u64, max: usize) -> Result<Vec<LoggedEvent>, ColdError> {
        let decoded = self.decode()?;
        let skip = usize::try_from(from_seq.saturating_sub(self.first_seq)).unwrap_or(usize::MAX);
        let whole = Bytes::from_owner(DecodedBytes(Arc::clone(&decoded)));
        let mut out =
            Vec::with_capacity(max.min(self.count()).min(self.count().saturating_sub(skip)));
        let mut start = if skip == 0 {
            0
        } else {
            decoded
                .ends
                .get(skip - 1)
                .map_or(usize::MAX, |&e| e as usize)
        };
        for (i, &end) in decoded.ends.iter().enumerate().skip(skip).take(max) {
            let end = end as usize;
            let seq = self.first_seq + i as u64;
            let frame = whole.slice(start..end);
            let kind = kind_of(&frame, seq).ok_or_else(|| self.error("bad frame header"))?;
            out.push(LoggedEvent {
                seq,
                kind,
                data_start: data_start_of(seq, kind),
                frame,
            });
            start = end;
        }
        Ok(out)
    }

    /// The decompressed block, shared with any reader still holding it.
    fn decode(&self) -> Result<Arc<Decoded>, ColdError> {
        let mut slot = self.decoded.lock();
        if let Some(decoded) = slot.upgrade() {
            return Ok(decoded);
        }
        let raw = miniz_oxide::inflate::decompress_to_vec_with_limit(
            &self.compressed,
            self.raw_len as usize,
        )
        .map_err(|e| self.error(&format!("inflate failed: {e:?}")))?;
        if raw.len() != self.raw_len as usize {
            return Err(self.error("wrong length"));
        }
        let ends = match &self.ends {
            Some(ends) => ends.to_vec(),
            None => split_frames(&raw),
        };
        if ends.len() != self.count() || ends.last().copied() != Some(self.raw_len) {
            return Err(self.error("wrong frame count"));
        }
        let decoded = Arc::new(Decoded { raw, ends });
        *slot = Arc::downgrade(&decoded);
        Ok(decoded)
    }

    fn error(&self, reason: &str) -> ColdError {
        ColdError {
            first_seq: self.first_seq,
            end_seq: self.end_seq(),
            reason: reason.to_owned(),
        }
    }
}

/// A compressor and its buffers, kept per thread: deflate's state is a few hundred KiB, and
/// allocating it per block would churn the allocator of the very threads that shrink the heap.
struct Packer {
    compressor: CompressorOxide,
    raw: Vec<u8>,
    out: Vec<u8>,
}

impl Packer {
    fn new() -> Self {
        Self {
            compressor: CompressorOxide::new(create_comp_flags_from_zip_params(
                i32::from(LEVEL),
                -15, // raw deflate, no zlib header
                0,
            )),
            raw: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Compresses `self.raw`, returning exactly the compressed bytes.
    fn deflate(&mut self) -> Option<Box<[u8]>> {
        self.compressor.reset();
        self.out.clear();
        self.out.resize((self.raw.len() / 2).max(64), 0);
        let mut input = &self.raw[..];
        let mut pos = 0;
        loop {
            let (status, read, written) = compress(
                &mut self.compressor,
                input,
                &mut self.out[pos..],
                TDEFLFlush::Finish,
            );
            pos += written;
            match status {
                TDEFLStatus::Done => return Some(self.out[..pos].into()),
                TDEFLStatus::Okay => {
                    input = input.get(read..)?;
                    if self.out.len() - pos < 64 {
                        let grown = self.out.len() * 2;
                        self.out.resize(grown, 0);
                    }
                }
                _ => return None,
            }
        }
    }
}

thread_local! {
    static PACKER: RefCell<Option<Packer>> = const { RefCell::new(None) };
}

fn with_packer<T>(f: impl FnOnce(&mut Packer) -> Option<T>) -> Option<T> {
    PACKER.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => f(slot.get_or_insert_with(Packer::new)),
        Err(_) => f(&mut Packer::new()),
    })
}

/// End offsets of the frames in `raw`: each ends with the first `\n\n` after its `data: `.
fn split_frames(raw: &[u8]) -> Vec<u32> {
    const DATA: &[u8] = b"\ndata: ";
    let mut ends = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let Some(data) = find(&raw[pos..], DATA) else {
            break;
        };
        let body = pos + data + DATA.len();
        let Some(end) = find(&raw[body..], b"\n\n") else {
            break;
        };
        pos = body + end + 2;
        match u32::try_from(pos) {
            Ok(p) => ends.push(p),
            Err(_) => break,
        }
    }
    ends
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The kind named in a frame's header, checking that the frame carries `seq`.
fn kind_of(frame: &[u8], seq: u64) -> Option<EventKind> {
    let rest = frame.strip_prefix(b"id: ")?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    let id: u64 = std::str::from_utf8(&rest[..nl]).ok()?.parse().ok()?;
    if id != seq {
        return None;
    }
    let rest = rest[nl + 1..].strip_prefix(b"event: ")?;
    let nl = rest.iter().position(|&b| b == b'\n')?;
    EventKind::from_name(std::str::from_utf8(&rest[..nl]).ok()?)
}
