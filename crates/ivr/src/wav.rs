//! Prompt file check: a prompt must be a RIFF/WAVE file the media engine can play without
//! transcoding, 8 kHz mono, either 16-bit linear PCM or 8-bit G.711 (A-law or mu-law).

use std::time::Duration;

/// The sample encoding of an accepted prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WavEncoding {
    /// 16-bit signed little-endian linear PCM.
    Pcm16,
    /// G.711 A-law, 8 bits per sample.
    Alaw,
    /// G.711 mu-law, 8 bits per sample.
    Ulaw,
}

/// What the header of an accepted prompt says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavInfo {
    pub encoding: WavEncoding,
    /// Length of the audio, from the data chunk size.
    pub duration: Duration,
}

/// Why a prompt file is not playable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    #[error("not a RIFF/WAVE file")]
    NotWave,
    #[error("no fmt chunk")]
    NoFormat,
    #[error("no data chunk")]
    NoData,
    #[error("the audio is empty")]
    Empty,
    #[error("sample rate is {0} Hz; prompts must be 8000 Hz")]
    SampleRate(u32),
    #[error("{0} channels; prompts must be mono")]
    Channels(u16),
    #[error("format {format} with {bits} bits per sample; prompts must be 16-bit PCM or G.711 A-law/mu-law")]
    Encoding { format: u16, bits: u16 },
}

const SAMPLE_RATE: u32 = 8000;

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([*b.first()?, *b.get(1)?]))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([
        *b.first()?,
        *b.get(1)?,
        *b.get(2)?,
        *b.get(3)?,
    ]))
}

/// Checks a whole WAV file's bytes. Never panics, whatever the bytes.
pub fn check_wav(bytes: &[u8]) -> Result<WavInfo, WavError> {
    if bytes.get(0..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
        return Err(WavError::NotWave);
    }
    let mut format: Option<(u16, u16, u32, u16)> = None;
    let mut data_len: Option<u32> = None;
    let mut at = 12usize;
    while let (Some(id), Some(len)) = (
        bytes.get(at..at.saturating_add(4)),
        u32_at(bytes, at.saturating_add(4)),
    ) {
        let body = at.saturating_add(8);
        match id {
            b"fmt " => {
                let tag = u16_at(bytes, body).ok_or(WavError::NoFormat)?;
                let channels = u16_at(bytes, body.saturating_add(2)).ok_or(WavError::NoFormat)?;
                let rate = u32_at(bytes, body.saturating_add(4)).ok_or(WavError::NoFormat)?;
                let bits = u16_at(bytes, body.saturating_add(14)).ok_or(WavError::NoFormat)?;
                format = Some((tag, channels, rate, bits));
            }
            b"data" => {
                // sox writes the real size; a streaming writer may leave it short of the file, so clamp.
                let available = u32::try_from(bytes.len().saturating_sub(body)).unwrap_or(u32::MAX);
                data_len = Some(len.min(available));
                break;
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        let padded = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .saturating_add(usize::try_from(len % 2).unwrap_or(0));
        at = body.saturating_add(padded);
    }
    let (tag, channels, rate, bits) = format.ok_or(WavError::NoFormat)?;
    let encoding = match (tag, bits) {
        (1, 16) => WavEncoding::Pcm16,
        (6, 8) => WavEncoding::Alaw,
        (7, 8) => WavEncoding::Ulaw,
        (format, bits) => return Err(WavError::Encoding { format, bits }),
    };
    if channels != 1 {
        return Err(WavError::Channels(channels));
    }
    if rate != SAMPLE_RATE {
        return Err(WavError::SampleRate(rate));
    }
    let data_len = data_len.ok_or(WavError::NoData)?;
    let bytes_per_second = match encoding {
        WavEncoding::Pcm16 => 2 * SAMPLE_RATE,
        WavEncoding::Alaw | WavEncoding::Ulaw => SAMPLE_RATE,
    };
    if data_len == 0 {
        return Err(WavError::Empty);
    }
    let duration = Duration::from_millis(u64::from(data_len) * 1000 / u64::from(bytes_per_second));
    Ok(WavInfo { encoding, duration })
}

/// A minimal valid WAV file: `samples` of silence, 8 kHz mono, in the given encoding. For tests and fixtures.
pub fn silent_wav(encoding: WavEncoding, samples: u32) -> Vec<u8> {
    let (tag, bits, silence): (u16, u16, &[u8]) = match encoding {
        WavEncoding::Pcm16 => (1, 16, &[0, 0]),
        WavEncoding::Alaw => (6, 8, &[0xd5]),
        WavEncoding::Ulaw => (7, 8, &[0xff]),
    };
    let block = bits / 8;
    let data_len = samples * u32::from(block);
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&SAMPLE_RATE.to_le_bytes());
    out.extend_from_slice(&(SAMPLE_RATE * u32::from(block)).to_le_bytes());
    out.extend_from_slice(&block.to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for _ in 0..samples {
        out.extend_from_slice(silence);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_pcm_and_g711() {
        let info = check_wav(&silent_wav(WavEncoding::Pcm16, 8000)).unwrap();
        assert_eq!(
            info,
            WavInfo {
                encoding: WavEncoding::Pcm16,
                duration: Duration::from_secs(1)
            }
        );
        assert_eq!(
            check_wav(&silent_wav(WavEncoding::Alaw, 4000)).unwrap().duration,
            Duration::from_millis(500)
        );
        assert_eq!(
            check_wav(&silent_wav(WavEncoding::Ulaw, 80)).unwrap().encoding,
            WavEncoding::Ulaw
        );
    }

    #[test]
    fn rejects_wrong_rate_channels_and_text() {
        let mut stereo = silent_wav(WavEncoding::Pcm16, 100);
        stereo[22] = 2;
        assert_eq!(check_wav(&stereo), Err(WavError::Channels(2)));
        let mut cd = silent_wav(WavEncoding::Pcm16, 100);
        cd[24..28].copy_from_slice(&44_100u32.to_le_bytes());
        assert_eq!(check_wav(&cd), Err(WavError::SampleRate(44_100)));
        assert_eq!(check_wav(b"hello, not audio"), Err(WavError::NotWave));
        assert_eq!(
            check_wav(&silent_wav(WavEncoding::Pcm16, 0)),
            Err(WavError::Empty)
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = check_wav(&bytes);
        }

        #[test]
        fn never_panics_on_corrupted_headers(pos in 0usize..44, byte in any::<u8>()) {
            let mut wav = silent_wav(WavEncoding::Pcm16, 10);
            wav[pos] = byte;
            let _ = check_wav(&wav);
        }
    }
}
