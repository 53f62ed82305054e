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
