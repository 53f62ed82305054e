//! A small, fully specified random number generator for the simulator.
//!
//! Common random numbers need every policy to see the same draws for the same lead, across runs, machines
//! and library versions, so the generator is written out here (SplitMix64 seeding xoshiro256++) instead of
//! depending on a crate whose stream may change between releases.

/// SplitMix64 step: used to expand seeds into independent generator states.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256++ generator with helpers for the distributions the simulator draws from.
#[derive(Debug, Clone)]
pub struct SimRng {
    s: [u64; 4],
}

impl SimRng {
    /// A generator for one stream, identified by a base seed and a list of stream keys
    /// (for instance `[lead_index, purpose]`), so streams never overlap in practice.
    pub fn stream(seed: u64, keys: &[u64]) -> Self {
        let mut mix = seed ^ 0x5851_F42D_4C95_7F2D;
        for key in keys {
            mix = splitmix64(&mut mix) ^ key.wrapping_mul(0xA24B_AED4_963E_E407);
        }
        let mut sm = mix;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Self { s }
    }

    /// The next raw 64-bit value.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[0]
            .wrapping_add(self.s[3])
            .rotate_left(23)
            .wrapping_add(self.s[0]);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1]: safe to take the logarithm of.
    fn uniform_open0(&mut self) -> f64 {
        1.0 - self.uniform()
    }

    /// Exponential with the given mean.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * self.uniform_open0().ln()
    }

    /// Standard normal (Box-Muller; one value per call keeps streams simple to reason about).
    pub fn standard_normal(&mut self) -> f64 {
        let u1 = self.uniform_open0();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Lognormal given its mean and coefficient of variation (sd / mean) on the natural scale.
    pub fn lognormal_mean_cv(&mut self, mean: f64, cv: f64) -> f64 {
        if mean <= 0.0 {
            return 0.0;
        }
        let sigma2 = (1.0 + cv * cv).ln();
        let mu = mean.ln() - sigma2 / 2.0;
        (mu + sigma2.sqrt() * self.standard_normal()).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_keys_give_same_stream_and_different_keys_differ() {
        let mut a = SimRng::stream(7, &[3, 1]);
        let mut b = SimRng::stream(7, &[3, 1]);
        let mut c = SimRng::stream(7, &[4, 1]);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..4).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn lognormal_has_the_requested_mean() {
        let mut rng = SimRng::stream(1, &[]);
        let n = 200_000;
        let mean = (0..n).map(|_| rng.lognormal_mean_cv(180.0, 0.8)).sum::<f64>() / n as f64;
        assert!((mean - 180.0).abs() < 3.0, "mean {mean}");
    }

    #[test]
    fn uniform_stays_in_range_and_is_centred() {
        let mut rng = SimRng::stream(2, &[9]);
        let mut sum = 0.0;
        for _ in 0..100_000 {
            let u = rng.uniform();
            assert!((0.0..1.0).contains(&u));
            sum += u;
        }
        assert!((sum / 100_000.0 - 0.5).abs() < 0.01);
    }
}
