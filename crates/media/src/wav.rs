//! WAV files: reading 8 kHz mono prompts (16-bit PCM, G.711 mu-law or A-law) and the header of the recorder's
//! stereo output.
//!
//! [`parse_wav`] is pure and turns bytes into samples or a [`WavProblem`] saying exactly what is wrong;
//! [`load_wav`] adds the file name, so an operator reading a log knows which prompt to fix.

use crate::g711::{G711, SAMPLE_RATE};
use std::fmt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// WAVE format tag: integer PCM.
pub const FORMAT_PCM: u16 = 1;
/// WAVE format tag: G.711 A-law.
pub const FORMAT_ALAW: u16 = 6;
/// WAVE format tag: G.711 mu-law.
pub const FORMAT_MULAW: u16 = 7;
/// WAVE format tag: extensible (the real tag is in the sub-format GUID).
pub const FORMAT_EXTENSIBLE: u16 = 0xfffe;

/// What is wrong with a WAV file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WavProblem {
    #[error("not a RIFF/WAVE file")]
    NotWave,
    #[error("no 'fmt ' chunk before the audio data")]
    MissingFormat,
    #[error("no 'data' chunk")]
    MissingData,
    #[error("truncated: {what} declares {declared} bytes but only {available} are present")]
    Truncated {
        what: &'static str,
        declared: usize,
        available: usize,
    },
    #[error(
        "sample rate is {0} Hz, prompts must be 8000 Hz (convert with: sox in.wav -r 8000 -c 1 -b 16 out.wav)"
    )]
    WrongRate(u32),
    #[error("{0} channels, prompts must be mono")]
    NotMono(u16),
    #[error("unsupported encoding (format tag {tag}, {bits} bits): use 16-bit PCM, mu-law or A-law")]
    UnsupportedEncoding { tag: u16, bits: u16 },
}

/// A WAV file that could not be loaded, naming the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WavLoadError {
    pub path: PathBuf,
    pub reason: WavLoadReason,
}

/// Why a WAV file could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WavLoadReason {
    /// The file could not be read (missing, permissions).
    Unreadable(String),
    /// The file was read but its contents are not usable.
    Invalid(WavProblem),
}

impl fmt::Display for WavLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            WavLoadReason::Unreadable(e) => write!(f, "cannot read WAV file {}: {e}", self.path.display()),
            WavLoadReason::Invalid(problem) => write!(f, "WAV file {}: {problem}", self.path.display()),
        }
    }
}

impl std::error::Error for WavLoadError {}

/// How the samples of a file are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WavEncoding {
    Pcm16,
    Law(G711),
}

/// Decoded audio: 8 kHz mono linear samples and how the file stored them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WavAudio {
    pub encoding: WavEncoding,
    pub samples: Vec<i16>,
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

/// Parses a WAV file's bytes into 8 kHz mono samples.
pub fn parse_wav(bytes: &[u8]) -> Result<WavAudio, WavProblem> {
    if bytes.get(0..4) != Some(b"RIFF") || bytes.get(8..12) != Some(b"WAVE") {
        return Err(WavProblem::NotWave);
    }
    let mut offset = 12;
    let mut format: Option<(u16, u16, u32, u16)> = None;
    while offset + 8 <= bytes.len() {
        let id = bytes.get(offset..offset + 4).unwrap_or_default();
        let size = le_u32(bytes, offset + 4).unwrap_or(0) as usize;
        let body_start = offset + 8;
        let available = bytes.len() - body_start;
        if id == b"fmt " {
            let body =
                bytes
                    .get(body_start..body_start.saturating_add(size))
                    .ok_or(WavProblem::Truncated {
                        what: "'fmt ' chunk",
                        declared: size,
                        available,
                    })?;
            let short = || WavProblem::Truncated {
                what: "'fmt ' chunk",
                declared: 16,
                available: body.len(),
            };
            let mut tag = le_u16(body, 0).ok_or_else(short)?;
            let channels = le_u16(body, 2).ok_or_else(short)?;
            let rate = le_u32(body, 4).ok_or_else(short)?;
            let bits = le_u16(body, 14).ok_or_else(short)?;
            if tag == FORMAT_EXTENSIBLE {
                // The first two bytes of the sub-format GUID are the real tag.
                tag = le_u16(body, 24).ok_or(WavProblem::Truncated {
                    what: "extensible 'fmt ' chunk",
                    declared: 40,
                    available: body.len(),
                })?;
            }
            format = Some((tag, channels, rate, bits));
        } else if id == b"data" {
            let (tag, channels, rate, bits) = format.ok_or(WavProblem::MissingFormat)?;
            let data =
                bytes
                    .get(body_start..body_start.saturating_add(size))
                    .ok_or(WavProblem::Truncated {
                        what: "'data' chunk",
                        declared: size,
                        available,
                    })?;
            if channels != 1 {
                return Err(WavProblem::NotMono(channels));
            }
            if rate != SAMPLE_RATE {
                return Err(WavProblem::WrongRate(rate));
            }
            return match (tag, bits) {
                (FORMAT_PCM, 16) => Ok(WavAudio {
                    encoding: WavEncoding::Pcm16,
                    samples: data
                        .chunks_exact(2)
                        .map(|p| i16::from_le_bytes([p[0], p[1]]))
                        .collect(),
                }),
                (FORMAT_MULAW, 8) => Ok(WavAudio {
                    encoding: WavEncoding::Law(G711::Pcmu),
                    samples: data.iter().map(|b| G711::Pcmu.decode(*b)).collect(),
                }),
                (FORMAT_ALAW, 8) => Ok(WavAudio {
                    encoding: WavEncoding::Law(G711::Pcma),
                    samples: data.iter().map(|b| G711::Pcma.decode(*b)).collect(),
                }),
                _ => Err(WavProblem::UnsupportedEncoding { tag, bits }),
            };
        }
        // Chunks are padded to an even length.
        offset = body_start.saturating_add(size).saturating_add(size % 2);
    }
    Err(if format.is_some() {
        WavProblem::MissingData
    } else {
        WavProblem::MissingFormat
    })
}

/// Reads and parses a WAV file.
pub fn load_wav(path: &Path) -> Result<WavAudio, WavLoadError> {
    let bytes = std::fs::read(path).map_err(|e| WavLoadError {
        path: path.to_path_buf(),
        reason: WavLoadReason::Unreadable(e.to_string()),
    })?;
    parse_wav(&bytes).map_err(|problem| WavLoadError {
        path: path.to_path_buf(),
        reason: WavLoadReason::Invalid(problem),
    })
}

/// A 44-byte canonical WAV header for integer PCM.
pub fn pcm_header(channels: u16, sample_rate: u32, data_len: u32) -> [u8; 44] {
    let block_align = channels * 2;
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&data_len.saturating_add(36).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&FORMAT_PCM.to_le_bytes());
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&sample_rate.to_le_bytes());
    h[28..32].copy_from_slice(&(sample_rate * u32::from(block_align)).to_le_bytes());
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

/// A mono 8 kHz 16-bit PCM WAV file in memory (tests and tools).
pub fn mono_pcm_wav(samples: &[i16]) -> Vec<u8> {
    let data_len = u32::try_from(samples.len() * 2).unwrap_or(u32::MAX);
    let mut out = pcm_header(1, SAMPLE_RATE, data_len).to_vec();
    out.extend(samples.iter().flat_map(|s| s.to_le_bytes()));
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata").join(name)
    }

    #[test]
    fn loads_the_three_fixture_encodings() {
        let hello = load_wav(&testdata("hello.wav")).unwrap();
        assert_eq!(hello.encoding, WavEncoding::Pcm16);
        assert!(hello.samples.len() > 4000, "{}", hello.samples.len());
        let greeting = load_wav(&testdata("greeting.wav")).unwrap();
        assert_eq!(greeting.encoding, WavEncoding::Law(G711::Pcmu));
        assert!(greeting.samples.len() > 5 * 8000);
        let talkoff = load_wav(&testdata("talkoff.wav")).unwrap();
        assert_eq!(talkoff.encoding, WavEncoding::Law(G711::Pcma));
        assert!(talkoff.samples.iter().any(|s| s.abs() > 5000));
    }

    #[test]
    fn pcm_round_trip() {
        let samples = [0i16, 1, -1, i16::MAX, i16::MIN, 1234];
        let audio = parse_wav(&mono_pcm_wav(&samples)).unwrap();
        assert_eq!(audio.samples, samples);
    }

    fn with_format(channels: u16, rate: u32, tag: u16, bits: u16) -> Vec<u8> {
        let mut bytes = mono_pcm_wav(&[0; 8]);
        bytes[20..22].copy_from_slice(&tag.to_le_bytes());
        bytes[22..24].copy_from_slice(&channels.to_le_bytes());
        bytes[24..28].copy_from_slice(&rate.to_le_bytes());
        bytes[34..36].copy_from_slice(&bits.to_le_bytes());
        bytes
    }

    #[test]
    fn clear_errors_for_wrong_files() {
        assert_eq!(
            parse_wav(&with_format(1, 16000, 1, 16)),
            Err(WavProblem::WrongRate(16000))
        );
        assert_eq!(
            parse_wav(&with_format(2, 8000, 1, 16)),
            Err(WavProblem::NotMono(2))
        );
        assert_eq!(
            parse_wav(&with_format(1, 8000, 3, 32)),
            Err(WavProblem::UnsupportedEncoding { tag: 3, bits: 32 })
        );
        assert_eq!(parse_wav(b"ID3 not a wav"), Err(WavProblem::NotWave));
        let full = mono_pcm_wav(&[5; 100]);
        assert_eq!(
            parse_wav(&full[..full.len() - 10]),
            Err(WavProblem::Truncated {
                what: "'data' chunk",
                declared: 200,
                available: 190
            })
        );
        assert_eq!(parse_wav(&full[..36]), Err(WavProblem::MissingData));
        assert_eq!(parse_wav(&full[..12]), Err(WavProblem::MissingFormat));
    }

    #[test]
    fn load_errors_name_the_file() {
        let missing = load_wav(Path::new("/nonexistent/prompts/welcome.wav")).unwrap_err();
        assert!(matches!(missing.reason, WavLoadReason::Unreadable(_)));
        assert!(
            missing.to_string().contains("/nonexistent/prompts/welcome.wav"),
            "{missing}"
        );

        let dir = std::env::temp_dir().join(format!("media-wav-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let stereo = dir.join("stereo.wav");
        std::fs::write(&stereo, with_format(2, 8000, 1, 16)).unwrap();
        let err = load_wav(&stereo).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("stereo.wav") && text.contains("2 channels, prompts must be mono"),
            "{text}"
        );
        let wide = dir.join("wideband.wav");
        std::fs::write(&wide, with_format(1, 44100, 1, 16)).unwrap();
        assert!(load_wav(&wide).unwrap_err().to_string().contains("44100 Hz"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_wav(&bytes);
        }

        #[test]
        fn corrupted_headers_never_panic(index in 0usize..60, value in any::<u8>()) {
            let mut bytes = mono_pcm_wav(&[7; 8]);
            bytes[index] = value;
            let _ = parse_wav(&bytes);
        }
    }
}
