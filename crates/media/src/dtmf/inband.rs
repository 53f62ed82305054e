//! In-band DTMF detection on 8 kHz PCM for callers whose phones do not send telephone-events.
//!
//! Every 10 ms the detector analyses the last 205 samples (25.6 ms). Goertzel filters at the eight nominal
//! frequencies pick the strongest row and column tone; the true frequency of each is then measured from the
//! phase advance between two overlapping sub-blocks, so the frequency tolerance (accept within 1.5%, reject
//! beyond 3.5%: the limit sits at 2.5%) is independent of the filter bandwidth. A window counts as a digit
//! only if the two tones carry nearly all of its energy (which rejects speech and noise), each is loud enough,
//! and the twist between them is within limits. A digit is reported after two consecutive windows agree
//! (tones of 40 ms or more pass, 25 ms or less do not), and the next one only after a pause of four windows
//! without it, so a short dropout inside one tone does not count twice.

use super::{COL_HZ, DtmfDigit, ROW_HZ};

const SAMPLE_RATE: f64 = 8000.0;
const WINDOW: usize = 205;
const HOP: usize = 80;
/// Sub-blocks for the frequency measurement: two blocks of `SUB_LEN` samples, `SUB_SHIFT` apart.
const SUB_SHIFT: usize = 64;
const SUB_LEN: usize = WINDOW - SUB_SHIFT;

/// Detection limits; the defaults follow ITU-T Q.24 style receivers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InbandConfig {
    /// Largest accepted relative deviation of either tone from its nominal frequency.
    pub max_frequency_deviation: f64,
    /// Lowest mean-square power of each tone (16-bit sample units squared); 10 000 is about -43 dBm0.
    pub min_tone_power: f64,
    /// Share of the window's energy the two tones must carry.
    pub min_tone_energy_share: f64,
    /// Largest high-group over low-group level, in dB ("standard twist").
    pub max_standard_twist_db: f64,
    /// Largest low-group over high-group level, in dB ("reverse twist").
    pub max_reverse_twist_db: f64,
    /// Consecutive agreeing windows before a digit is reported.
    pub windows_to_report: u32,
    /// Consecutive windows without the digit before another may be reported.
    pub windows_to_rearm: u32,
}

impl Default for InbandConfig {
    fn default() -> Self {
        Self {
            max_frequency_deviation: 0.025,
            min_tone_power: 10_000.0,
            min_tone_energy_share: 0.8,
            max_standard_twist_db: 4.0,
            max_reverse_twist_db: 8.0,
            windows_to_report: 2,
            windows_to_rearm: 4,
        }
    }
}

/// A digit detected in the audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InbandDigit {
    pub digit: DtmfDigit,
    /// Index of the sample (counted from the first one fed) at which the digit was confirmed.
    pub at_sample: u64,
}

/// The detector; feed it samples in any chunk size with [`InbandDetector::process`].
#[derive(Debug, Clone)]
pub struct InbandDetector {
    config: InbandConfig,
    ring: [f32; WINDOW],
    write: usize,
    filled: usize,
    since_analysis: usize,
    samples_seen: u64,
    candidate: Option<DtmfDigit>,
    candidate_windows: u32,
    reported: Option<DtmfDigit>,
    windows_without_reported: u32,
}

impl Default for InbandDetector {
    fn default() -> Self {
        Self::new(InbandConfig::default())
    }
}

/// Power of `x` at `hz`: mean square of a sinusoid of that frequency (A²/2 for amplitude A).
fn goertzel_power(x: &[f32; WINDOW], hz: f64) -> f64 {
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * hz / SAMPLE_RATE).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for sample in x {
        let s0 = f64::from(*sample) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let magnitude_sq = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * magnitude_sq / (WINDOW as f64 * WINDOW as f64)
}

/// Complex DFT of `x` at `hz`.
fn dft(x: &[f32], hz: f64) -> (f64, f64) {
    let step = 2.0 * std::f64::consts::PI * hz / SAMPLE_RATE;
    let (step_re, step_im) = (step.cos(), -step.sin());
    let (mut rot_re, mut rot_im) = (1.0f64, 0.0f64);
    let (mut re, mut im) = (0.0, 0.0);
    for sample in x {
        let s = f64::from(*sample);
        re += s * rot_re;
        im += s * rot_im;
        (rot_re, rot_im) = (
            rot_re * step_re - rot_im * step_im,
            rot_re * step_im + rot_im * step_re,
        );
    }
    (re, im)
}

/// Measures the frequency of the tone near `nominal` from the phase advance between two sub-blocks.
fn measure_frequency(x: &[f32; WINDOW], nominal: f64) -> f64 {
    let (a_re, a_im) = dft(&x[..SUB_LEN], nominal);
    let (b_re, b_im) = dft(&x[SUB_SHIFT..], nominal);
    // arg(b * conj(a)) = true angular frequency * shift, less the nominal one already removed by the DFT.
    let phase = (b_im * a_re - b_re * a_im).atan2(b_re * a_re + b_im * a_im);
    let nominal_phase = 2.0 * std::f64::consts::PI * nominal * SUB_SHIFT as f64 / SAMPLE_RATE;
    let mut offset = phase - nominal_phase;
    offset = (offset + std::f64::consts::PI).rem_euclid(2.0 * std::f64::consts::PI) - std::f64::consts::PI;
    nominal + offset * SAMPLE_RATE / (2.0 * std::f64::consts::PI * SUB_SHIFT as f64)
}

fn strongest(x: &[f32; WINDOW], freqs: &[f64; 4]) -> (usize, f64) {
    let mut best = (0, f64::MIN);
    for (i, hz) in freqs.iter().enumerate() {
        let p = goertzel_power(x, *hz);
        if p > best.1 {
            best = (i, p);
        }
    }
    best
}

impl InbandDetector {
    /// A detector with the given limits.
    pub fn new(config: InbandConfig) -> Self {
        Self {
            config,
            ring: [0.0; WINDOW],
            write: 0,
            filled: 0,
            since_analysis: 0,
            samples_seen: 0,
            candidate: None,
            candidate_windows: 0,
            reported: None,
            windows_without_reported: 0,
        }
    }

    /// Feeds samples; `on_digit` is called for each digit confirmed within them.
    pub fn process(&mut self, samples: &[i16], mut on_digit: impl FnMut(InbandDigit)) {
        for sample in samples {
            self.ring[self.write] = f32::from(*sample);
            self.write = (self.write + 1) % WINDOW;
            self.filled = (self.filled + 1).min(WINDOW);
            self.samples_seen += 1;
            self.since_analysis += 1;
            if self.since_analysis >= HOP && self.filled == WINDOW {
                self.since_analysis = 0;
                let mut window = [0.0f32; WINDOW];
                let (older, newer) = self.ring.split_at(self.write);
                window[..newer.len()].copy_from_slice(newer);
                window[newer.len()..].copy_from_slice(older);
                let hit = self.classify(&window);
                if let Some(digit) = self.track(hit) {
                    on_digit(InbandDigit {
                        digit,
                        at_sample: self.samples_seen,
                    });
                }
            }
        }
    }

    /// Feeds samples and collects the digits (convenience for tests and cold paths).
    pub fn process_collect(&mut self, samples: &[i16]) -> Vec<InbandDigit> {
        let mut out = Vec::new();
        self.process(samples, |d| out.push(d));
        out
    }

    /// The digit one window holds, if it passes every test.
    fn classify(&self, x: &[f32; WINDOW]) -> Option<DtmfDigit> {
        let total_power = x.iter().map(|s| f64::from(*s) * f64::from(*s)).sum::<f64>() / WINDOW as f64;
        if total_power < 2.0 * self.config.min_tone_power {
            return None;
        }
        let (row, _) = strongest(x, &ROW_HZ);
        let (col, _) = strongest(x, &COL_HZ);
        let row_nominal = ROW_HZ[row];
        let col_nominal = COL_HZ[col];
        let row_hz = measure_frequency(x, row_nominal);
        let col_hz = measure_frequency(x, col_nominal);
        let max_dev = self.config.max_frequency_deviation;
        if ((row_hz - row_nominal) / row_nominal).abs() > max_dev
            || ((col_hz - col_nominal) / col_nominal).abs() > max_dev
        {
            return None;
        }
        // Levels measured at the tones' true frequencies, so an in-tolerance offset costs no energy.
        let row_power = goertzel_power(x, row_hz);
        let col_power = goertzel_power(x, col_hz);
        if row_power < self.config.min_tone_power || col_power < self.config.min_tone_power {
            return None;
        }
        if row_power + col_power < self.config.min_tone_energy_share * total_power {
            return None;
        }
        let twist_db = 10.0 * (col_power / row_power).log10();
        if twist_db > self.config.max_standard_twist_db || twist_db < -self.config.max_reverse_twist_db {
            return None;
        }
        DtmfDigit::from_keypad(row, col)
    }

    fn track(&mut self, hit: Option<DtmfDigit>) -> Option<DtmfDigit> {
        if hit == self.candidate {
            self.candidate_windows = self.candidate_windows.saturating_add(1);
        } else {
            self.candidate = hit;
            self.candidate_windows = 1;
        }
        if self.reported.is_some() {
            if hit.is_some() && hit == self.reported {
                self.windows_without_reported = 0;
            } else {
                self.windows_without_reported = self.windows_without_reported.saturating_add(1);
                if self.windows_without_reported >= self.config.windows_to_rearm {
                    // Latched: once the pause is long enough, the same digit may come again.
                    self.reported = None;
                }
            }
        }
        match self.candidate {
            Some(digit)
                if self.reported.is_none() && self.candidate_windows >= self.config.windows_to_report =>
            {
                self.reported = Some(digit);
                self.windows_without_reported = 0;
                Some(digit)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Two-tone signal; `level` is each tone's amplitude.
    pub(crate) fn tone_pair(low: f64, high: f64, ms: usize, low_amp: f64, high_amp: f64) -> Vec<i16> {
        (0..ms * 8)
            .map(|n| {
                let t = n as f64 / SAMPLE_RATE;
                let v = low_amp * (2.0 * std::f64::consts::PI * low * t).sin()
                    + high_amp * (2.0 * std::f64::consts::PI * high * t + 0.7).sin();
                v.round().clamp(-32768.0, 32767.0) as i16
            })
            .collect()
    }

    pub(crate) fn digit_tone(digit: DtmfDigit, ms: usize) -> Vec<i16> {
        let (low, high) = digit.frequencies();
        tone_pair(low, high, ms, 6000.0, 7000.0)
    }

    fn silence(ms: usize) -> Vec<i16> {
        vec![0; ms * 8]
    }

    /// Deterministic Gaussian-ish noise (sum of uniforms) with the given RMS.
    pub(crate) fn noise(samples: usize, rms: f64, seed: u64) -> Vec<f64> {
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        // Sum of 12 uniforms in [-0.5, 0.5) has variance 1.
        (0..samples)
            .map(|_| rms * (0..12).map(|_| next()).sum::<f64>())
            .collect()
    }

    fn detect(samples: &[i16]) -> Vec<DtmfDigit> {
        InbandDetector::default()
            .process_collect(samples)
            .into_iter()
            .map(|d| d.digit)
            .collect()
    }

    #[test]
    fn every_digit_is_detected_once() {
        for digit in DtmfDigit::ALL {
            let mut signal = silence(30);
            signal.extend(digit_tone(digit, 80));
            signal.extend(silence(60));
            assert_eq!(detect(&signal), [digit], "{digit:?}");
        }
    }

    #[test]
    fn a_dialled_sequence_with_short_pauses() {
        let digits = [
            DtmfDigit::D1,
            DtmfDigit::D1,
            DtmfDigit::D9,
            DtmfDigit::Star,
            DtmfDigit::D0,
            DtmfDigit::Pound,
        ];
        let mut signal = silence(20);
        for digit in digits {
            signal.extend(digit_tone(digit, 50));
            signal.extend(silence(45));
        }
        assert_eq!(detect(&signal), digits);
    }

    #[test]
    fn chunk_size_does_not_matter() {
        let mut signal = silence(13);
        signal.extend(digit_tone(DtmfDigit::D8, 60));
        signal.extend(silence(50));
        for chunk in [1, 7, 160, 1000] {
            let mut detector = InbandDetector::default();
            let mut got = Vec::new();
            for part in signal.chunks(chunk) {
                detector.process(part, |d| got.push(d.digit));
            }
            assert_eq!(got, [DtmfDigit::D8], "chunk {chunk}");
        }
    }

    #[test]
    fn forty_ms_tones_pass_at_every_alignment_and_short_tones_do_not() {
        for offset in (0..80).step_by(8) {
            for digit in [DtmfDigit::D1, DtmfDigit::D, DtmfDigit::Star] {
                let mut signal = vec![0; offset];
                signal.extend(digit_tone(digit, 40));
                signal.extend(silence(50));
                assert_eq!(detect(&signal), [digit], "40 ms {digit:?} offset {offset}");
                let mut short = vec![0; offset];
                short.extend(digit_tone(digit, 23));
                short.extend(silence(50));
                assert!(detect(&short).is_empty(), "23 ms {digit:?} offset {offset}");
            }
        }
    }

    #[test]
    fn frequency_tolerance_accepts_1_5_percent_and_rejects_3_5_percent() {
        for digit in DtmfDigit::ALL {
            let (low, high) = digit.frequencies();
            for factor in [0.985, 1.015] {
                let signal = tone_pair(low * factor, high * factor, 80, 6000.0, 7000.0);
                assert_eq!(detect(&signal), [digit], "{digit:?} x{factor}");
                let row_only = tone_pair(low * factor, high, 80, 6000.0, 7000.0);
                assert_eq!(detect(&row_only), [digit], "{digit:?} row x{factor}");
            }
            for factor in [0.965, 1.035] {
                let both = tone_pair(low * factor, high * factor, 80, 6000.0, 7000.0);
                assert!(detect(&both).is_empty(), "{digit:?} x{factor}");
                let row_off = tone_pair(low * factor, high, 80, 6000.0, 7000.0);
                assert!(detect(&row_off).is_empty(), "{digit:?} row x{factor}");
                let col_off = tone_pair(low, high * factor, 80, 6000.0, 7000.0);
                assert!(detect(&col_off).is_empty(), "{digit:?} col x{factor}");
            }
        }
    }

    #[test]
    fn twist_limits() {
        let (low, high) = DtmfDigit::D5.frequencies();
        let amp = 6000.0;
        let db = |d: f64| 10f64.powf(d / 20.0);
        // High group 3 dB above low: accepted; 6 dB above: rejected.
        assert_eq!(
            detect(&tone_pair(low, high, 80, amp, amp * db(3.0))),
            [DtmfDigit::D5]
        );
        assert!(detect(&tone_pair(low, high, 80, amp, amp * db(6.0))).is_empty());
        // Low group 7 dB above high: accepted; 10 dB above: rejected.
        assert_eq!(
            detect(&tone_pair(low, high, 80, amp, amp / db(7.0))),
            [DtmfDigit::D5]
        );
        assert!(detect(&tone_pair(low, high, 80, amp, amp / db(10.0))).is_empty());
    }

    #[test]
    fn single_tones_and_quiet_tones_are_rejected() {
        assert!(detect(&tone_pair(770.0, 1336.0, 100, 6000.0, 0.0)).is_empty());
        assert!(detect(&tone_pair(770.0, 1336.0, 100, 0.0, 6000.0)).is_empty());
        assert!(detect(&tone_pair(770.0, 1336.0, 100, 50.0, 50.0)).is_empty());
    }

    #[test]
    fn a_ten_ms_dropout_does_not_count_twice_but_a_forty_ms_pause_does() {
        let mut dropout = digit_tone(DtmfDigit::D3, 60);
        dropout.extend(silence(10));
        dropout.extend(digit_tone(DtmfDigit::D3, 60));
        dropout.extend(silence(50));
        assert_eq!(detect(&dropout), [DtmfDigit::D3]);
        let mut pause = digit_tone(DtmfDigit::D3, 60);
        pause.extend(silence(40));
        pause.extend(digit_tone(DtmfDigit::D3, 60));
        pause.extend(silence(50));
        assert_eq!(detect(&pause), [DtmfDigit::D3, DtmfDigit::D3]);
    }

    #[test]
    fn detected_under_white_noise_at_15_db_snr() {
        for (i, digit) in DtmfDigit::ALL.into_iter().enumerate() {
            let (low, high) = digit.frequencies();
            // Each tone at amplitude 3000: signal power 2 * 3000^2 / 2 = 9e6; noise RMS for 15 dB SNR.
            let tones = tone_pair(low, high, 100, 3000.0, 3000.0);
            let noise_rms = (9.0e6f64 / 10f64.powf(1.5)).sqrt();
            let mut signal: Vec<i16> = noise(400, noise_rms, 7 + i as u64)
                .into_iter()
                .map(|n| n as i16)
                .collect();
            let body = noise(tones.len() + 400, noise_rms, 1000 + i as u64);
            signal.extend(
                tones
                    .iter()
                    .chain(std::iter::repeat_n(&0, 400))
                    .zip(body)
                    .map(|(t, n)| (f64::from(*t) + n).round().clamp(-32768.0, 32767.0) as i16),
            );
            assert_eq!(detect(&signal), [digit], "{digit:?}");
        }
    }

    #[test]
    fn noise_alone_gives_no_digit() {
        let signal: Vec<i16> = noise(8000 * 5, 3000.0, 42)
            .into_iter()
            .map(|n| n as i16)
            .collect();
        assert!(detect(&signal).is_empty());
    }

    #[test]
    fn talk_off_real_speech_gives_no_false_digits() {
        for name in ["hello.wav", "greeting.wav", "talkoff.wav"] {
            let audio = crate::wav::load_wav(&crate::wav::tests::testdata(name)).unwrap();
            assert!(audio.samples.len() > 6000, "{name}");
            // Also 6 dB louder (clipped), as a loud talker would be.
            let loud: Vec<i16> = audio.samples.iter().map(|s| s.saturating_mul(2)).collect();
            assert!(detect(&audio.samples).is_empty(), "{name}");
            assert!(detect(&loud).is_empty(), "{name} loud");
        }
    }

    #[test]
    fn a_digit_after_speech_is_still_detected() {
        let mut signal = crate::wav::load_wav(&crate::wav::tests::testdata("hello.wav"))
            .unwrap()
            .samples;
        signal.extend(silence(50));
        signal.extend(digit_tone(DtmfDigit::D4, 60));
        signal.extend(silence(50));
        assert_eq!(detect(&signal), [DtmfDigit::D4]);
    }
}
