//! SRTP and SRTCP (RFC 3711) with the AES_CM_128_HMAC_SHA1_80 and _32 suites, for SIP phones that use
//! SDES keys (RFC 4568, [`crate::sdes`]).
//!
//! Pure and allocation-free on the packet path: [`SrtpSender`] protects RTP and RTCP in place in a caller's
//! buffer (the tag is appended), [`SrtpReceiver`] checks the tag, rejects replays and decrypts in place.
//! Keys come from a 30-byte master key and salt ([`MasterKey`]) through the RFC's key derivation (key
//! derivation rate 0: one set of session keys for the life of the keys; no MKI).
//!
//! The arithmetic, from RFC 3711:
//! - packet index `i = ROC * 2^16 + SEQ` (48 bits); the receiver guesses ROC from its highest sequence
//!   (§3.3.1, Appendix A), authenticates with that guess, and only then updates its state;
//! - AES-CM IV `= (salt * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16)`, keystream block `j` = AES(key, IV + j);
//! - tag = HMAC-SHA1(auth key, authenticated portion || ROC) truncated to 80 or 32 bits; SRTCP always
//!   uses 80 bits and carries `E || 31-bit index` before the tag;
//! - replay: a 64-packet sliding window per SSRC below the highest index seen (§3.3.2).
//!
//! AES and HMAC-SHA1 come from RustCrypto (`aes`, `hmac`, `sha1`). The AES key schedule and the keyed HMAC
//! state are computed once per key; a packet costs one clone of the HMAC state, the AES blocks of its payload
//! and two SHA-1 compressions per 64 bytes.

use aes::Aes128;
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use std::collections::HashMap;
use subtle::ConstantTimeEq;
use thiserror::Error;

type HmacSha1 = Hmac<Sha1>;

/// Length of the master key.
pub const MASTER_KEY_LEN: usize = 16;
/// Length of the master salt.
pub const MASTER_SALT_LEN: usize = 14;
/// Bytes an SRTP packet may grow by when protected (the longest tag).
pub const MAX_RTP_OVERHEAD: usize = 10;
/// Bytes an SRTCP packet grows by when protected (E flag and index, then an 80-bit tag).
pub const RTCP_OVERHEAD: usize = 4 + 10;
/// Streams (SSRCs) a receiver keeps replay state for; beyond it the least recently seen is forgotten.
const MAX_STREAMS: usize = 8;
/// Packets below the highest index still accepted once (RFC 3711 §3.3.2 asks for at least 64).
const REPLAY_WINDOW: u64 = 64;

/// The crypto suites supported (RFC 4568 §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpSuite {
    /// AES-128 counter mode, HMAC-SHA1 with an 80-bit tag: the one every SDES phone offers.
    AesCm128HmacSha1_80,
    /// The same with a 32-bit tag on SRTP (SRTCP keeps 80 bits).
    AesCm128HmacSha1_32,
}

impl SrtpSuite {
    /// The suite's name in `a=crypto`.
    pub fn name(self) -> &'static str {
        match self {
            Self::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Self::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    /// The suite named `name` (case-sensitive, as RFC 4568 registers them).
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::AesCm128HmacSha1_80, Self::AesCm128HmacSha1_32]
            .into_iter()
            .find(|suite| suite.name() == name)
    }

    /// Length of the SRTP authentication tag.
    pub fn rtp_tag_len(self) -> usize {
        match self {
            Self::AesCm128HmacSha1_80 => 10,
            Self::AesCm128HmacSha1_32 => 4,
        }
    }
}

/// A master key and salt. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    key: [u8; MASTER_KEY_LEN],
    salt: [u8; MASTER_SALT_LEN],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A fresh random key and salt (the operating system's generator, through `rand`).
    pub fn generate() -> Self {
        Self {
            key: rand::random(),
            salt: rand::random(),
        }
    }

    /// Key then salt, as `a=crypto`'s inline key carries them.
    pub fn from_bytes(bytes: &[u8; MASTER_KEY_LEN + MASTER_SALT_LEN]) -> Self {
        let mut key = [0; MASTER_KEY_LEN];
        let mut salt = [0; MASTER_SALT_LEN];
        key.copy_from_slice(&bytes[..MASTER_KEY_LEN]);
        salt.copy_from_slice(&bytes[MASTER_KEY_LEN..]);
        Self { key, salt }
    }

    /// Key then salt.
    pub fn to_bytes(&self) -> [u8; MASTER_KEY_LEN + MASTER_SALT_LEN] {
        let mut out = [0; MASTER_KEY_LEN + MASTER_SALT_LEN];
        out[..MASTER_KEY_LEN].copy_from_slice(&self.key);
        out[MASTER_KEY_LEN..].copy_from_slice(&self.salt);
        out
    }
}

/// Why a packet was not protected or not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SrtpError {
    #[error("packet too short or malformed")]
    Malformed,
    #[error("buffer has no room for the authentication tag")]
    NoRoom,
    #[error("authentication failed")]
    AuthFailed,
    #[error("replayed or too old packet")]
    Replay,
}

/// Session keys for one direction of RTP or RTCP (RFC 3711 §4.3).
#[derive(Clone)]
struct SessionKeys {
    cipher: Aes128,
    salt: [u8; MASTER_SALT_LEN],
    /// HMAC keyed with the session authentication key, cloned per packet.
    auth: HmacSha1,
    #[cfg(test)]
    raw: ([u8; 16], [u8; 20]),
}

/// RFC 3711 §4.3.1 with key derivation rate 0: AES-CM of `(label * 2^48) XOR master salt`, times 2^16.
fn derive(master: &MasterKey, label: u8, out: &mut [u8]) {
    let cipher = Aes128::new(&master.key.into());
    let mut iv = [0u8; 16];
    iv[..MASTER_SALT_LEN].copy_from_slice(&master.salt);
    iv[7] ^= label;
    for (block_index, chunk) in out.chunks_mut(16).enumerate() {
        let mut block = iv;
        block[14..16].copy_from_slice(&(block_index as u16).to_be_bytes());
        let mut block = block.into();
        cipher.encrypt_block(&mut block);
        let block: [u8; 16] = block.into();
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

impl SessionKeys {
    /// Labels 0, 1, 2 for SRTP; 3, 4, 5 for SRTCP.
    fn derive(master: &MasterKey, first_label: u8) -> Self {
        let mut cipher_key = [0u8; 16];
        let mut auth_key = [0u8; 20];
        let mut salt = [0u8; MASTER_SALT_LEN];
        derive(master, first_label, &mut cipher_key);
        derive(master, first_label + 1, &mut auth_key);
        derive(master, first_label + 2, &mut salt);
        let auth = <HmacSha1 as KeyInit>::new_from_slice(&auth_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        Self {
            cipher: Aes128::new(&cipher_key.into()),
            salt,
            auth,
            #[cfg(test)]
            raw: (cipher_key, auth_key),
        }
    }

    /// XORs the AES-CM keystream for (`ssrc`, `index`) into `data` (encryption and decryption alike).
    fn apply_keystream(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        let mut iv = [0u8; 16];
        iv[..MASTER_SALT_LEN].copy_from_slice(&self.salt);
        for (byte, ssrc_byte) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *byte ^= ssrc_byte;
        }
        for (byte, index_byte) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *byte ^= index_byte;
        }
        // Up to 8 blocks per call to the cipher so that AES-NI can pipeline them.
        let mut counter: u16 = 0;
        for chunk in data.chunks_mut(16 * 8) {
            let mut blocks = [aes::Block::default(); 8];
            let count = chunk.len().div_ceil(16);
            for block in blocks.iter_mut().take(count) {
                let mut input = iv;
                input[14..16].copy_from_slice(&counter.to_be_bytes());
                *block = input.into();
                counter = counter.wrapping_add(1);
            }
            let Some(blocks) = blocks.get_mut(..count) else {
                return;
            };
            self.cipher.encrypt_blocks(blocks);
            for (bytes, block) in chunk.chunks_mut(16).zip(blocks.iter()) {
                for (byte, key) in bytes.iter_mut().zip(block.iter()) {
                    *byte ^= key;
                }
            }
        }
    }

    /// HMAC-SHA1 over `parts`, all 20 bytes.
    fn tag(&self, parts: &[&[u8]]) -> [u8; 20] {
        let mut mac = self.auth.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

/// Length of the RTP header of `packet` (fixed part, CSRCs, extension); `None` if malformed.
fn rtp_header_len(packet: &[u8]) -> Option<usize> {
    let first = *packet.first()?;
    if first >> 6 != 2 || packet.len() < 12 {
        return None;
    }
    let mut len = 12 + usize::from(first & 0x0f) * 4;
    if first & 0x10 != 0 {
        let words = packet.get(len + 2..len + 4)?;
        len += 4 + usize::from(u16::from_be_bytes([words[0], words[1]])) * 4;
    }
    (len <= packet.len()).then_some(len)
}

fn u32_at(packet: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = packet.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// Our sending side: SRTP and SRTCP with our master key.
#[derive(Clone)]
pub struct SrtpSender {
    suite: SrtpSuite,
    rtp: SessionKeys,
    rtcp: SessionKeys,
    /// Rollover counter and last sequence number per SSRC we send (normally one).
    streams: HashMap<u32, (u32, u16)>,
    rtcp_index: u32,
}

impl std::fmt::Debug for SrtpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpSender").field("suite", &self.suite).finish()
    }
}

impl SrtpSender {
    pub fn new(suite: SrtpSuite, master: &MasterKey) -> Self {
        Self {
            suite,
            rtp: SessionKeys::derive(master, 0),
            rtcp: SessionKeys::derive(master, 3),
            streams: HashMap::new(),
            rtcp_index: 0,
        }
    }

    /// Encrypts the RTP packet in `buf[..len]` and appends its tag; returns the new length. `buf` needs
    /// [`SrtpSuite::rtp_tag_len`] bytes of room after `len`.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let tag_len = self.suite.rtp_tag_len();
        let total = len.checked_add(tag_len).ok_or(SrtpError::NoRoom)?;
        if buf.len() < total {
            return Err(SrtpError::NoRoom);
        }
        let (packet, rest) = buf.split_at_mut(len);
        let header_len = rtp_header_len(packet).ok_or(SrtpError::Malformed)?;
        let sequence = u16::from_be_bytes([packet[2], packet[3]]);
        let ssrc = u32_at(packet, 8).ok_or(SrtpError::Malformed)?;
        if self.streams.len() >= MAX_STREAMS && !self.streams.contains_key(&ssrc) {
            self.streams.clear(); // our own SSRC changes rarely; never grow without bound
        }
        let (roc, last) = self.streams.entry(ssrc).or_insert((0, sequence));
        // Sequence numbers only move forward for the sender; a wrap below the last one bumps ROC.
        if sequence < *last && last.wrapping_sub(sequence) > 0x8000 {
            *roc = roc.wrapping_add(1);
        }
        *last = sequence;
        let roc = *roc;
        let index = (u64::from(roc) << 16) | u64::from(sequence);
        self.rtp
            .apply_keystream(ssrc, index, packet.get_mut(header_len..).unwrap_or(&mut []));
        let tag = self.rtp.tag(&[packet, &roc.to_be_bytes()]);
        rest[..tag_len].copy_from_slice(&tag[..tag_len]);
        Ok(total)
    }

    /// Encrypts the RTCP compound packet in `buf[..len]` (all but its first 8 bytes), appends `E || index`
    /// and the 80-bit tag; returns the new length. `buf` needs [`RTCP_OVERHEAD`] bytes of room.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let total = len.checked_add(RTCP_OVERHEAD).ok_or(SrtpError::NoRoom)?;
        if buf.len() < total || len < 8 {
            return Err(if len < 8 {
                SrtpError::Malformed
            } else {
                SrtpError::NoRoom
            });
        }
        let ssrc = u32_at(buf, 4).ok_or(SrtpError::Malformed)?;
        let index = self.rtcp_index;
        self.rtcp_index = (self.rtcp_index + 1) & 0x7fff_ffff;
        self.rtcp
            .apply_keystream(ssrc, u64::from(index), buf.get_mut(8..len).unwrap_or(&mut []));
        let e_index = (0x8000_0000 | index).to_be_bytes();
        buf[len..len + 4].copy_from_slice(&e_index);
        let tag = self.rtcp.tag(&[&buf[..len + 4]]);
        buf[len + 4..total].copy_from_slice(&tag[..10]);
        Ok(total)
    }
}

/// Replay and rollover state of one received SSRC.
#[derive(Debug, Clone, Copy)]
struct ReceivedStream {
    roc: u32,
    /// Highest sequence number authenticated (s_l).
    highest: u16,
    /// Bit k set: index `highest_index - k` was received.
    window: u64,
    /// For forgetting the least recently seen stream.
    last_used: u64,
}

impl ReceivedStream {
    fn highest_index(&self) -> u64 {
        (u64::from(self.roc) << 16) | u64::from(self.highest)
    }

    /// RFC 3711 Appendix A: the ROC that makes `sequence` closest to the highest sequence seen.
    fn guess_roc(&self, sequence: u16) -> u32 {
        let (roc, s_l) = (self.roc, i32::from(self.highest));
        let seq = i32::from(sequence);
        if s_l < 0x8000 {
            if seq - s_l > 0x8000 {
                roc.wrapping_sub(1)
            } else {
                roc
            }
        } else if s_l - 0x8000 > seq {
            roc.wrapping_add(1)
        } else {
            roc
        }
    }

    fn check_replay(&self, index: u64) -> Result<(), SrtpError> {
        let highest = self.highest_index();
        if index > highest {
            return Ok(());
        }
        let behind = highest - index;
        if behind >= REPLAY_WINDOW || self.window & (1 << behind) != 0 {
            return Err(SrtpError::Replay);
        }
        Ok(())
    }

    fn accept(&mut self, index: u64) {
        let highest = self.highest_index();
        if index > highest {
            let ahead = index - highest;
            self.window = if ahead >= REPLAY_WINDOW {
                1
            } else {
                (self.window << ahead) | 1
            };
            self.roc = (index >> 16) as u32;
            self.highest = index as u16;
        } else {
            self.window |= 1 << (highest - index);
        }
    }
}

/// Replay state of received SRTCP (one per receiver: the peer's RTCP index counts across its SSRCs).
#[derive(Debug, Clone, Copy, Default)]
struct RtcpReplay {
    highest: Option<u32>,
    window: u64,
}

impl RtcpReplay {
    fn check(&self, index: u32) -> Result<(), SrtpError> {
        let Some(highest) = self.highest else {
            return Ok(());
        };
        if index > highest {
            return Ok(());
        }
        let behind = u64::from(highest - index);
        if behind >= REPLAY_WINDOW || self.window & (1 << behind) != 0 {
            return Err(SrtpError::Replay);
        }
        Ok(())
    }

    fn accept(&mut self, index: u32) {
        match self.highest {
            Some(highest) if index <= highest => self.window |= 1 << (highest - index),
            Some(highest) => {
                let ahead = u64::from(index - highest);
                self.window = if ahead >= REPLAY_WINDOW {
                    1
                } else {
                    (self.window << ahead) | 1
                };
                self.highest = Some(index);
            }
            None => {
                self.window = 1;
                self.highest = Some(index);
            }
        }
    }
}

/// Our receiving side: checks, replay-protects and decrypts the peer's SRTP and SRTCP (its master key).
#[derive(Clone)]
pub struct SrtpReceiver {
    suite: SrtpSuite,
    rtp: SessionKeys,
    rtcp: SessionKeys,
    streams: HashMap<u32, ReceivedStream>,
    rtcp_replay: RtcpReplay,
    packets: u64,
}

impl std::fmt::Debug for SrtpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpReceiver")
            .field("suite", &self.suite)
            .finish()
    }
}

impl SrtpReceiver {
    pub fn new(suite: SrtpSuite, master: &MasterKey) -> Self {
        Self {
            suite,
            rtp: SessionKeys::derive(master, 0),
            rtcp: SessionKeys::derive(master, 3),
            streams: HashMap::new(),
            rtcp_replay: RtcpReplay::default(),
            packets: 0,
        }
    }

    /// Authenticates, replay-checks and decrypts the SRTP packet in `buf` in place; returns the length of
    /// the plain RTP packet (the tag removed). Nothing changes unless the packet is accepted.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.suite.rtp_tag_len();
        let len = buf.len().checked_sub(tag_len).ok_or(SrtpError::Malformed)?;
        let (packet, tag) = buf.split_at_mut(len);
        let header_len = rtp_header_len(packet).ok_or(SrtpError::Malformed)?;
        let sequence = u16::from_be_bytes([packet[2], packet[3]]);
        let ssrc = u32_at(packet, 8).ok_or(SrtpError::Malformed)?;
        let known = self.streams.get(&ssrc).copied();
        let roc = known.map_or(0, |stream| stream.guess_roc(sequence));
        let index = (u64::from(roc) << 16) | u64::from(sequence);
        if let Some(stream) = &known {
            stream.check_replay(index)?;
        }
        let expected = self.rtp.tag(&[packet, &roc.to_be_bytes()]);
        if !bool::from(expected[..tag_len].ct_eq(tag)) {
            return Err(SrtpError::AuthFailed);
        }
        self.rtp
            .apply_keystream(ssrc, index, packet.get_mut(header_len..).unwrap_or(&mut []));
        self.packets += 1;
        let now = self.packets;
        if known.is_none() && self.streams.len() >= MAX_STREAMS {
            let oldest = self
                .streams
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                self.streams.remove(&oldest);
            }
        }
        let stream = self.streams.entry(ssrc).or_insert(ReceivedStream {
            roc,
            highest: sequence,
            window: 0,
            last_used: now,
        });
        stream.accept(index);
        stream.last_used = now;
        Ok(len)
    }

    /// Authenticates, replay-checks and decrypts the SRTCP packet in `buf` in place; returns the length of the
    /// plain RTCP compound packet.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let len = buf.len().checked_sub(RTCP_OVERHEAD).ok_or(SrtpError::Malformed)?;
        if len < 8 {
            return Err(SrtpError::Malformed);
        }
        let (authenticated, tag) = buf.split_at_mut(len + 4);
        let e_index = u32_at(authenticated, len).ok_or(SrtpError::Malformed)?;
        let encrypted = e_index & 0x8000_0000 != 0;
        let index = e_index & 0x7fff_ffff;
        self.rtcp_replay.check(index)?;
        let expected = self.rtcp.tag(&[authenticated]);
        if !bool::from(expected[..10].ct_eq(tag)) {
            return Err(SrtpError::AuthFailed);
        }
        let ssrc = u32_at(authenticated, 4).ok_or(SrtpError::Malformed)?;
        if encrypted {
            self.rtcp.apply_keystream(
                ssrc,
                u64::from(index),
                authenticated.get_mut(8..len).unwrap_or(&mut []),
            );
        }
        self.rtcp_replay.accept(index);
        Ok(len)
    }
}

/// Both directions of one leg: we send with `local`, the peer sends with `remote` (RFC 4568: each side's
/// `a=crypto` carries the key it sends with).
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    pub suite: SrtpSuite,
    /// The key we send with (the one in our SDP).
    pub local: MasterKey,
    /// The key the peer sends with (the one in its SDP).
    pub remote: MasterKey,
}

impl std::fmt::Debug for SrtpKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpKeys").field("suite", &self.suite).finish()
    }
}

impl SrtpKeys {
    /// The sender and receiver contexts these keys make.
    pub fn contexts(&self) -> (SrtpSender, SrtpReceiver) {
        (
            SrtpSender::new(self.suite, &self.local),
            SrtpReceiver::new(self.suite, &self.remote),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn rfc_master() -> MasterKey {
        let bytes: [u8; 30] = hex("E1F97A0D3E018BE0D64FA32C06DE4139 0EC675AD498AFEEBB6960B3AABE6")
            .try_into()
            .unwrap();
        MasterKey::from_bytes(&bytes)
    }

    /// RFC 3711 Appendix B.3 (SRTP labels), and the SRTCP labels derived the same way.
    #[test]
    fn key_derivation_matches_rfc_3711_appendix_b3() {
        let rtp = SessionKeys::derive(&rfc_master(), 0);
        assert_eq!(rtp.raw.0.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        assert_eq!(rtp.salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        assert_eq!(
            rtp.raw.1.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );
        let rtcp = SessionKeys::derive(&rfc_master(), 3);
        assert_eq!(rtcp.raw.0.to_vec(), hex("4C1AA45A81F73D61C800BBB00FBB1EAA"));
        assert_eq!(rtcp.salt.to_vec(), hex("9581C7AD87B3E530BF3E4454A8B3"));
        // The RFC's 94-byte auth key run: the counter advances through six blocks.
        let mut long = [0u8; 94];
        derive(&rfc_master(), 1, &mut long);
        assert_eq!(
            long.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE
                 E049646C43D9327AD175578EF72270986371C10C9A369AC2F94A8C5FBCDDDC25
                 6D6E919A48B610EF17C2041E474035766B68642C59BBFC2F34DB60DBDFB2")
        );
    }

    /// RFC 3711 Appendix B.2: the AES-CM keystream for SSRC 0, index 0.
    #[test]
    fn keystream_matches_rfc_3711_appendix_b2() {
        let key: [u8; 16] = hex("2B7E151628AED2A6ABF7158809CF4F3C").try_into().unwrap();
        let keys = SessionKeys {
            cipher: Aes128::new(&key.into()),
            salt: hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap(),
            auth: <HmacSha1 as KeyInit>::new_from_slice(&[0; 20]).unwrap(),
            raw: ([0; 16], [0; 20]),
        };
        let mut stream = vec![0u8; 0xff02 * 16];
        keys.apply_keystream(0, 0, &mut stream);
        assert_eq!(
            stream[..48].to_vec(),
            hex("E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB
                 41E95B3BB0A2E8DD477901E4FCA894C0")
        );
        let block = |j: usize| stream[j * 16..j * 16 + 16].to_vec();
        assert_eq!(block(0xfeff), hex("EC8CDF7398607CB0F2D21675EA9EA1E4"));
        assert_eq!(block(0xff00), hex("362B7C3C6773516318A077D7FC5073AE"));
        assert_eq!(block(0xff01), hex("6A2CC3787889374FBEB4C81B17BA6C44"));
    }

    fn rtp(sequence: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        crate::rtp::RtpPacket::new(0, sequence, u32::from(sequence) * 160, ssrc, payload).to_vec()
    }

    fn protect(sender: &mut SrtpSender, packet: &[u8]) -> Vec<u8> {
        let mut buf = packet.to_vec();
        buf.resize(packet.len() + MAX_RTP_OVERHEAD, 0);
        let len = sender.protect_rtp(&mut buf, packet.len()).unwrap();
        buf.truncate(len);
        buf
    }

    #[test]
    fn a_round_trip_hides_the_payload_keeps_the_header_and_rejects_replays() {
        for suite in [SrtpSuite::AesCm128HmacSha1_80, SrtpSuite::AesCm128HmacSha1_32] {
            let master = MasterKey::generate();
            let mut sender = SrtpSender::new(suite, &master);
            let mut receiver = SrtpReceiver::new(suite, &master);
            let plain = rtp(7, 0x1234, &[0x55; 160]);
            let mut secured = protect(&mut sender, &plain);
            assert_eq!(secured.len(), plain.len() + suite.rtp_tag_len());
            assert_eq!(secured[..12], plain[..12], "the header stays readable");
            assert_ne!(secured[12..172], plain[12..], "the payload is encrypted");
            let copy = secured.clone();
            let len = receiver.unprotect_rtp(&mut secured).unwrap();
            assert_eq!(secured[..len], plain[..]);
            let mut replayed = copy;
            assert_eq!(receiver.unprotect_rtp(&mut replayed), Err(SrtpError::Replay));
        }
    }

    #[test]
    fn a_changed_bit_or_a_wrong_key_fails_authentication_and_changes_nothing() {
        let master = MasterKey::generate();
        let mut sender = SrtpSender::new(SrtpSuite::AesCm128HmacSha1_80, &master);
        let mut receiver = SrtpReceiver::new(SrtpSuite::AesCm128HmacSha1_80, &master);
        let secured = protect(&mut sender, &rtp(1, 9, &[1; 160]));
        let mut tampered = secured.clone();
        tampered[40] ^= 1;
        let before = tampered.clone();
        assert_eq!(receiver.unprotect_rtp(&mut tampered), Err(SrtpError::AuthFailed));
        assert_eq!(tampered, before);
        let mut stranger = SrtpReceiver::new(SrtpSuite::AesCm128HmacSha1_80, &MasterKey::generate());
        assert_eq!(
            stranger.unprotect_rtp(&mut secured.clone()),
            Err(SrtpError::AuthFailed)
        );
        // The genuine packet is still accepted after the forgery (the forgery left no state).
        assert!(receiver.unprotect_rtp(&mut secured.clone()).is_ok());
    }

    #[test]
    fn the_rollover_counter_follows_sequence_wraps_and_late_packets() {
        let master = MasterKey::generate();
        let mut sender = SrtpSender::new(SrtpSuite::AesCm128HmacSha1_80, &master);
        let mut receiver = SrtpReceiver::new(SrtpSuite::AesCm128HmacSha1_80, &master);
        let sequences: Vec<u16> = (0xfff0..=0xffff).chain(0..0x20).collect();
        let secured: Vec<Vec<u8>> = sequences
            .iter()
            .map(|s| protect(&mut sender, &rtp(*s, 5, &[*s as u8; 160])))
            .collect();
        // Delivered with the packets around the wrap swapped: the late one still decrypts with ROC 0.
        let mut order: Vec<usize> = (0..secured.len()).collect();
        order.swap(15, 17);
        for i in order {
            let mut packet = secured[i].clone();
            let len = receiver
                .unprotect_rtp(&mut packet)
                .unwrap_or_else(|e| panic!("packet {i}: {e}"));
            assert_eq!(packet[12..len], [sequences[i] as u8; 160]);
        }
    }

    #[test]
    fn the_replay_window_is_64_packets() {
        let master = MasterKey::generate();
        let mut sender = SrtpSender::new(SrtpSuite::AesCm128HmacSha1_80, &master);
        let mut receiver = SrtpReceiver::new(SrtpSuite::AesCm128HmacSha1_80, &master);
        let packets: Vec<Vec<u8>> = (0..200u16)
            .map(|s| protect(&mut sender, &rtp(s, 5, &[0; 20])))
            .collect();
        assert!(receiver.unprotect_rtp(&mut packets[100].clone()).is_ok());
        assert!(
            receiver.unprotect_rtp(&mut packets[37].clone()).is_ok(),
            "63 behind"
        );
        assert_eq!(
            receiver.unprotect_rtp(&mut packets[36].clone()),
            Err(SrtpError::Replay),
            "64 behind"
        );
        assert_eq!(
            receiver.unprotect_rtp(&mut packets[37].clone()),
            Err(SrtpError::Replay)
        );
        assert!(receiver.unprotect_rtp(&mut packets[199].clone()).is_ok());
        assert_eq!(
            receiver.unprotect_rtp(&mut packets[100].clone()),
            Err(SrtpError::Replay)
        );
    }

    #[test]
    fn srtcp_round_trips_and_rejects_replays_and_forgeries() {
        let master = MasterKey::generate();
        let mut sender = SrtpSender::new(SrtpSuite::AesCm128HmacSha1_32, &master);
        let mut receiver = SrtpReceiver::new(SrtpSuite::AesCm128HmacSha1_32, &master);
        let plain = crate::rtcp::RtcpCompound {
            packets: vec![crate::rtcp::RtcpPacket::ReceiverReport(
                crate::rtcp::ReceiverReport {
                    ssrc: 0xabc,
                    reports: Vec::new(),
                    extension: Vec::new(),
                },
            )],
        }
        .to_bytes()
        .unwrap();
        let mut buf = plain.clone();
        buf.resize(plain.len() + RTCP_OVERHEAD, 0);
        let len = sender.protect_rtcp(&mut buf, plain.len()).unwrap();
        assert_eq!(len, plain.len() + RTCP_OVERHEAD);
        let secured = buf.clone();
        let plain_len = receiver.unprotect_rtcp(&mut buf).unwrap();
        assert_eq!(buf[..plain_len], plain[..]);
        assert_eq!(
            receiver.unprotect_rtcp(&mut secured.clone()),
            Err(SrtpError::Replay)
        );
        let mut forged = secured.clone();
        forged[plain.len()] ^= 0x01; // the index
        assert_eq!(receiver.unprotect_rtcp(&mut forged), Err(SrtpError::AuthFailed));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_are_rejected_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let master = MasterKey::from_bytes(&[7; 30]);
            let mut receiver = SrtpReceiver::new(SrtpSuite::AesCm128HmacSha1_80, &master);
            let mut copy = bytes.clone();
            prop_assert!(receiver.unprotect_rtp(&mut copy).is_err());
            let mut copy = bytes.clone();
            prop_assert!(receiver.unprotect_rtcp(&mut copy).is_err());
            let mut sender = SrtpSender::new(SrtpSuite::AesCm128HmacSha1_80, &master);
            let mut buf = bytes.clone();
            buf.resize(bytes.len() + 20, 0);
            let _ = sender.protect_rtp(&mut buf, bytes.len());
            let _ = sender.protect_rtcp(&mut buf, bytes.len());
        }

        #[test]
        fn any_rtp_packet_round_trips(
            sequence in any::<u16>(),
            ssrc in any::<u32>(),
            payload in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let master = MasterKey::generate();
            let mut sender = SrtpSender::new(SrtpSuite::AesCm128HmacSha1_80, &master);
            let mut receiver = SrtpReceiver::new(SrtpSuite::AesCm128HmacSha1_80, &master);
            let plain = rtp(sequence, ssrc, &payload);
            let mut secured = protect(&mut sender, &plain);
            let len = receiver.unprotect_rtp(&mut secured).unwrap();
            prop_assert_eq!(&secured[..len], &plain[..]);
        }
    }
}
