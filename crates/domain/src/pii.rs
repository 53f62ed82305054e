//! Personal data: phone numbers, names, collected digits. Wrapped so that `Debug` and `Display` never
//! show the value; code that really needs it (the CRM writer, the SIP leg that dials) calls
//! [`Pii::expose`], which is easy to grep for.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A value that is personal data. Serialises transparently (it must reach the CRM store), prints masked.
#[derive(Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Pii<T>(T);

impl<T> Pii<T> {
    /// Wraps a personal value.
    pub fn new(value: T) -> Self {
        Self(value)
    }
    /// The value itself. Only for storage and signalling, never for logs or metric labels.
    pub fn expose(&self) -> &T {
        &self.0
    }
    /// Unwraps the value. Same rule as [`Pii::expose`].
    pub fn into_inner(self) -> T {
        self.0
    }
    /// Applies `f` inside the wrapper.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Pii<U> {
        Pii(f(self.0))
    }
}

impl Pii<String> {
    /// A masked form safe for a screen that may show a hint, e.g. the last digits of a number:
    /// every character but the last `keep` is replaced by `*`.
    pub fn masked_tail(&self, keep: usize) -> String {
        let n = self.0.chars().count();
        self.0
            .chars()
            .enumerate()
            .map(|(i, c)| if i + keep < n { '*' } else { c })
            .collect()
    }
}

impl<T> fmt::Debug for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pii(***)")
    }
}

impl<T> fmt::Display for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> From<T> for Pii<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let p = Pii::new("+14155550100".to_string());
        assert_eq!(format!("{p}"), "***");
        assert_eq!(format!("{p:?}"), "Pii(***)");
        assert_eq!(format!("{:?}", Some(p.clone())), "Some(Pii(***))");
        assert_eq!(p.masked_tail(4), "********0100");
    }

    #[test]
    fn serialises_the_value_for_storage() {
        let p = Pii::new("4321".to_string());
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"4321\"");
    }
}
