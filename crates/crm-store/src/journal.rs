//! The local append-only journal of the durable writer. A journal is a folder of numbered segment files;
//! each record is framed as `[length: u32 LE][crc32 of payload: u32 LE][payload]`. A crash can leave a
//! torn record at the end of the last segment: reading stops at the first frame whose length runs past
//! the end of the file or whose CRC does not match, and the rest of that file is ignored.
//! Blocking I/O: used from the writer's own thread and at start-up.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Bytes of a frame header.
pub const HEADER_LEN: usize = 8;
/// Largest payload accepted; a larger length field means a corrupt frame.
pub const MAX_RECORD_LEN: usize = 1 << 20;
const SEGMENT_SUFFIX: &str = ".journal";

/// Appends one framed record to `out`. Payloads over [`MAX_RECORD_LEN`] are refused.
pub fn encode_record(payload: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    if payload.len() > MAX_RECORD_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "journal record too large",
        ));
    }
    let len = u32::try_from(payload.len()).map_err(|_| io::Error::other("journal record too large"))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

/// The records of one segment's bytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decoded<'a> {
    pub records: Vec<&'a [u8]>,
    /// Bytes after the last whole record (a torn tail, or garbage), ignored.
    pub ignored_bytes: usize,
}

/// Splits a segment into its whole, CRC-checked records, stopping at the first bad frame.
pub fn decode_records(bytes: &[u8]) -> Decoded<'_> {
    let mut records = Vec::new();
    let mut pos = 0usize;
    while let Some(header) = bytes.get(pos..pos + HEADER_LEN) {
        let (len_bytes, crc_bytes) = header.split_at(4);
        let len = u32::from_le_bytes(len_bytes.try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(crc_bytes.try_into().unwrap_or_default());
        if len > MAX_RECORD_LEN {
            break;
        }
        let start = pos + HEADER_LEN;
        let Some(payload) = bytes.get(start..start + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        records.push(payload);
        pos = start + len;
    }
    Decoded {
        records,
        ignored_bytes: bytes.len() - pos,
    }
}

/// The file name of segment `id`; zero-padded so names sort like numbers.
pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SEGMENT_SUFFIX}"))
}

/// The segments in `dir`, oldest first. Other files are ignored.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(SEGMENT_SUFFIX) else {
            continue;
        };
        if let Ok(id) = stem.parse::<u64>() {
            segments.push((id, entry.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Flushes a folder's entries (file creations, deletions) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The segment being appended to.
#[derive(Debug)]
pub struct SegmentWriter {
    dir: PathBuf,
    id: u64,
    file: File,
    bytes: u64,
}

impl SegmentWriter {
    /// Creates segment `id` in `dir`, which must not exist yet, and makes its creation durable.
    pub fn create(dir: &Path, id: u64) -> io::Result<Self> {
        let file = crate::files::private_options()
            .create_new(true)
            .append(true)
            .open(segment_path(dir, id))?;
        sync_dir(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            id,
            file,
            bytes: 0,
        })
    }

    /// This segment's number.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.bytes
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Writes framed records and waits until they are on disk (one fsync for the whole group).
    pub fn append_durable(&mut self, framed: &[u8]) -> io::Result<()> {
        self.file.write_all(framed)?;
        self.file.sync_data()?;
        self.bytes += framed.len() as u64;
        Ok(())
    }

    /// Closes this segment and starts the next one; returns the closed segment's number.
    pub fn rotate(&mut self) -> io::Result<u64> {
        let next = Self::create(&self.dir, self.id + 1)?;
        let closed = self.id;
        *self = next;
        Ok(closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode_record(p, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn round_trip_and_torn_tail() {
        let bytes = framed(&[b"one", b"", b"three"]);
        let all = decode_records(&bytes);
        assert_eq!(all.records, vec![&b"one"[..], &b""[..], &b"three"[..]]);
        assert_eq!(all.ignored_bytes, 0);
        // Every cut inside the last record loses exactly that record.
        let last_start = bytes.len() - HEADER_LEN - 5;
        for cut in last_start..bytes.len() {
            let d = decode_records(&bytes[..cut]);
            assert_eq!(d.records.len(), 2, "cut at {cut}");
            assert_eq!(d.ignored_bytes, cut - last_start);
        }
    }

    #[test]
    fn a_flipped_bit_stops_reading_there() {
        let mut bytes = framed(&[b"first", b"second", b"third"]);
        let second_payload = HEADER_LEN + 5 + HEADER_LEN;
        bytes[second_payload] ^= 0x01;
        assert_eq!(decode_records(&bytes).records, vec![&b"first"[..]]);
    }

    #[test]
    fn segments_rotate_and_list_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::create(dir.path(), 9).unwrap();
        w.append_durable(&framed(&[b"a"])).unwrap();
        assert_eq!(w.rotate().unwrap(), 9);
        w.append_durable(&framed(&[b"b"])).unwrap();
        let ids: Vec<u64> = list_segments(dir.path())
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, vec![9, 10]);
        let bytes = std::fs::read(segment_path(dir.path(), 10)).unwrap();
        assert_eq!(decode_records(&bytes).records, vec![&b"b"[..]]);
        assert!(
            SegmentWriter::create(dir.path(), 10).is_err(),
            "never reopens an existing segment"
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let d = decode_records(&bytes);
            prop_assert!(d.ignored_bytes <= bytes.len());
        }

        #[test]
        fn any_prefix_decodes_to_a_prefix_of_the_records(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            let bytes = framed(&refs);
            let cut = cut.index(bytes.len() + 1);
            let d = decode_records(&bytes[..cut]);
            prop_assert!(d.records.len() <= refs.len());
            prop_assert_eq!(&d.records[..], &refs[..d.records.len()]);
        }
    }
}
