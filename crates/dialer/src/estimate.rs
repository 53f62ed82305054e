//! Online estimators used by the predictive policy: a discounted Beta for probabilities, an exponentially
//! weighted lognormal fit for durations, and the normal distribution helpers they need.
//!
//! All of them forget old data at a configurable rate so that the policy follows a list whose answer rate
//! changes during the shift.

use std::time::Duration;

/// Standard normal cumulative distribution function.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// Inverse of the standard normal CDF (Acklam's rational approximation, relative error below 1.2e-9
/// after clamping `p` into (1e-12, 1 - 1e-12)).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p = if p.is_nan() {
        0.5
    } else {
        p.clamp(1e-12, 1.0 - 1e-12)
    };
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.024_25 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.024_25 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// Complementary error function (Numerical Recipes' erfc, relative error below 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// A probability estimated from successes and failures, with old observations discounted.
#[derive(Debug, Clone)]
pub struct DiscountedBeta {
    alpha: f64,
    beta: f64,
    keep: f64,
}

impl DiscountedBeta {
    /// Starts from a prior mean and a prior weight (pseudo-observations); each new observation multiplies
    /// the existing weight by `keep` (1.0 keeps everything; 0.998 remembers roughly the last 500).
    pub fn new(prior_mean: f64, prior_weight: f64, keep: f64) -> Self {
        let mean = prior_mean.clamp(0.0, 1.0);
        let weight = prior_weight.max(1e-6);
        Self {
            alpha: mean * weight,
            beta: (1.0 - mean) * weight,
            keep: keep.clamp(0.0, 1.0),
        }
    }

    /// Records one trial.
    pub fn observe(&mut self, success: bool) {
        self.alpha = self.alpha * self.keep + f64::from(u8::from(success));
        self.beta = self.beta * self.keep + f64::from(u8::from(!success));
    }

    /// The posterior mean.
    pub fn mean(&self) -> f64 {
        self.alpha / (self.alpha + self.beta)
    }

    /// The effective number of observations behind the estimate.
    pub fn weight(&self) -> f64 {
        self.alpha + self.beta
    }
}

/// A lognormal fitted online to durations by exponentially weighted moments of their logarithm.
#[derive(Debug, Clone)]
pub struct LognormalFit {
    weight: f64,
    mean_log: f64,
    var_log: f64,
    keep: f64,
    samples: u64,
}

impl LognormalFit {
    /// A fit that starts from a prior with the given mean and coefficient of variation, worth
    /// `prior_weight` samples.
    pub fn new(prior_mean: Duration, prior_cv: f64, prior_weight: f64, keep: f64) -> Self {
        let mean = prior_mean.as_secs_f64().max(0.001);
        let var_log = (1.0 + prior_cv * prior_cv).ln();
        Self {
            weight: prior_weight.max(1e-6),
            mean_log: mean.ln() - var_log / 2.0,
            var_log,
            keep: keep.clamp(0.0, 1.0),
            samples: 0,
        }
    }

    /// Adds one observed duration.
    pub fn observe(&mut self, value: Duration) {
        let x = value.as_secs_f64().max(0.001).ln();
        self.weight = self.weight * self.keep + 1.0;
        let share = 1.0 / self.weight;
        let delta = x - self.mean_log;
        self.mean_log += share * delta;
        self.var_log = (1.0 - share) * (self.var_log + share * delta * delta);
        self.samples += 1;
    }

    /// How many durations were observed (the prior does not count).
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The fitted mean, in seconds.
    pub fn mean_secs(&self) -> f64 {
        (self.mean_log + self.var_log / 2.0).exp()
    }

    /// P(duration <= x seconds).
    pub fn cdf(&self, secs: f64) -> f64 {
        if secs <= 0.0 {
            return 0.0;
        }
        let sd = self.var_log.sqrt().max(1e-3);
        normal_cdf((secs.ln() - self.mean_log) / sd)
    }

    /// P(duration <= elapsed + horizon | duration > elapsed): how likely something that has lasted
    /// `elapsed` seconds ends within the next `horizon` seconds.
    pub fn ends_within(&self, elapsed: f64, horizon: f64) -> f64 {
        if horizon <= 0.0 {
            return 0.0;
        }
        let done = self.cdf(elapsed);
        let survive = 1.0 - done;
        if survive <= 1e-9 {
            // Far in the tail: the fit says it should already have ended, so it ends any moment now.
            return 1.0;
        }
        ((self.cdf(elapsed + horizon) - done) / survive).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SimRng;

    #[test]
    fn normal_cdf_matches_known_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.959_964) - 0.975).abs() < 1e-6);
        assert!((normal_cdf(-1.644_854) - 0.05).abs() < 1e-6);
        for p in [1e-6, 0.01, 0.0228, 0.3, 0.5, 0.9, 0.999] {
            assert!(
                (normal_cdf(normal_quantile(p)) - p).abs() < 1e-6 * p.max(1e-3),
                "{p}"
            );
        }
    }

    #[test]
    fn discounted_beta_follows_a_change() {
        let mut est = DiscountedBeta::new(0.5, 10.0, 0.99);
        for i in 0..1000 {
            est.observe(i % 10 < 6);
        }
        assert!((est.mean() - 0.6).abs() < 0.05);
        for i in 0..1000 {
            est.observe(i % 10 < 3);
        }
        assert!((est.mean() - 0.3).abs() < 0.05, "{}", est.mean());
    }

    #[test]
    fn lognormal_fit_recovers_mean_and_conditional_endings() {
        let mut rng = SimRng::stream(3, &[]);
        let mut fit = LognormalFit::new(Duration::from_secs(30), 1.0, 5.0, 1.0);
        for _ in 0..20_000 {
            fit.observe(Duration::from_secs_f64(rng.lognormal_mean_cv(180.0, 0.6)));
        }
        assert!((fit.mean_secs() - 180.0).abs() < 8.0, "{}", fit.mean_secs());
        // Something that has lasted far beyond the mean is likelier to end soon than something just begun.
        assert!(fit.ends_within(400.0, 20.0) > fit.ends_within(5.0, 20.0));
        assert_eq!(fit.ends_within(10.0, 0.0), 0.0);
        assert!(fit.ends_within(1e9, 1.0) > 0.99);
    }
}
